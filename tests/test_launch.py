"""The suite's clusters fork their processes from a preloaded server (trm_broker/dev/launch.py).
A forked `trm-broker` must behave as one started as a new interpreter: the same exit
status and output, exactly the environment and folder it was given (nothing of the test
process's own), its own pid, and signals that reach it alone."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from trm_broker.dev.cluster import free_port
from trm_broker.dev.launch import Launcher, Preloaded, Subprocesses

LAUNCHERS: dict[str, Launcher] = {"preloaded": Preloaded(), "subprocesses": Subprocesses()}


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request: pytest.FixtureRequest) -> Launcher:
    return LAUNCHERS[request.param]


def _env(**values: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TRM_")}, **values}


def test_a_command_runs_in_its_folder_and_prints_what_a_new_interpreter_prints(
    launcher: Launcher, tmp_path: Path
) -> None:
    done = launcher.run(["keys", "new", "ng.naptip", "--out", "keys.json"], _env(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["participant"] == "ng.naptip"
    assert (tmp_path / "keys.json").exists()  # relative to the folder it was given

    again = launcher.run(["keys", "new", "ng.naptip", "--out", "keys.json"], _env(), tmp_path)
    assert again.returncode != 0  # never overwritten: the same refusal either way
    assert "keys.json" in again.stderr


def test_a_command_sees_exactly_the_environment_it_is_given(
    launcher: Launcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A setting of the test process's own must not reach it (a forkserver started now
    # inherits it: the forked process replaces its environment with the one given) ...
    monkeypatch.setenv("TRM_CLOCK_SKEW_SECONDS", "soon")
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    done = launcher.run(["db", "upgrade"], _env(TRM_DATABASE_URL=url), tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "broker.db").exists()
    # ... and the one it is given does.
    bad = launcher.run(["db", "upgrade"], {**_env(), "TRM_CLOCK_SKEW_SECONDS": "soon"}, tmp_path)
    assert bad.returncode != 0
    assert "TRM_CLOCK_SKEW_SECONDS" in bad.stderr


def test_a_server_is_a_process_of_its_own_that_a_signal_stops(
    launcher: Launcher, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    env = _env(TRM_DATABASE_URL=url, TRM_BROKER_KEY_FILE=str(tmp_path / "key.json"))
    assert launcher.run(["db", "upgrade"], env, tmp_path).returncode == 0
    env.update(TRM_HOST="127.0.0.1", TRM_PORT=str(free_port()))
    log = tmp_path / "broker.log"
    child = launcher.start(["serve"], env, tmp_path, log)
    assert child.pid not in (os.getpid(), 0)
    assert Path(f"/proc/{child.pid}").exists()
    assert child.poll() is None
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert child.poll() == -signal.SIGKILL
