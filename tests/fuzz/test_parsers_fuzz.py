"""The parser fuzz targets: each takes its seeds as the seeds say (accepted, or a documented
refusal), and atheris runs it for TRM_FUZZ_RUNS inputs (default 2000) without a crash.

The runs' counts are printed, and tests/conftest.py shows them in the terminal summary.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("TRM_FUZZ_RUNS", "2000"))
#: Generous: start-up, then about a millisecond an input for the slowest target, times ten.
TIMEOUT = 120 + RUNS * 0.01
COMPLETED = re.compile(
    r"^fuzz (?P<name>\S+): (?P<runs>\d+) runs completed, (?P<accepted>\d+) accepted by the "
    r"parser, (?P<refused>\d+) refused, no crash$",
    re.MULTILINE,
)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_target_takes_its_seeds_as_they_say(name: str) -> None:
    target = TARGETS[name]
    outcomes = [target.run(seed.data) for seed in target.seeds()]
    assert outcomes == [seed.accepted for seed in target.seeds()]
    assert any(outcomes), "no seed is a valid input"


def _atheris_or_skip() -> None:
    if importlib.util.find_spec("atheris") is not None:
        return
    message = "atheris is not importable (pip install -e '.[dev]'; Linux only)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI requires it)")
    pytest.skip(message)


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzzing_a_parser_finds_no_crash(name: str) -> None:
    _atheris_or_skip()
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", name, "--runs", str(RUNS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT,
        check=False,
    )
    # A crash: its traceback and the input in hex are at the end of libFuzzer's output.
    assert result.returncode == 0, result.stdout + result.stderr[-20_000:]
    completed = COMPLETED.search(result.stdout)
    assert completed is not None, result.stdout + result.stderr[-5_000:]
    assert completed["name"] == name
    assert int(completed["runs"]) == RUNS
    print(completed[0])  # for the summary


def test_the_runner_lists_the_targets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(TARGETS)


#: The runner's own plumbing around a target that crashes on its seed.
CRASHER = textwrap.dedent(
    """
    import sys, types
    import atheris
    from tests.fuzz.__main__ import _fuzz, _parser
    from tests.fuzz.seeds import Seed
    from tests.fuzz.targets import Target

    def run(data: bytes) -> bool:
        if data.startswith(b"crash"):
            raise ValueError("a crash on purpose")
        return True

    target = Target("crasher", run, lambda: [Seed(b"crash!", True)], "crashes on its seed")
    args = _parser().parse_args(["crasher", "--runs", "100", "--work", sys.argv[1]])
    _fuzz(atheris, types.SimpleNamespace(TARGETS={"crasher": target}), args, [])
    """
)


def test_a_crash_fails_the_run_and_shows_the_input(tmp_path: Path) -> None:
    _atheris_or_skip()
    result = subprocess.run(
        [sys.executable, "-c", CRASHER, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "ValueError: a crash on purpose" in result.stdout  # atheris prints the traceback
    assert f"fuzz crasher: crashing input (hex): {b'crash!'.hex()}" in result.stderr
    assert "runs completed" not in result.stdout
    crashes = list((tmp_path / "crasher").glob("crash-*"))
    assert [path.read_bytes() for path in crashes] == [b"crash!"]
