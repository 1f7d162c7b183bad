"""How :class:`~trm_broker.dev.cluster.LocalCluster` starts its `trm-broker` processes.

:class:`Subprocesses` (the default, and what `trm-broker demo` uses) starts each one as
``python -m trm_broker.cli …``: a new interpreter that loads every module it needs first,
about a second of CPU before it serves.

:class:`Preloaded` forks each one from a server process that loaded those modules once
(``multiprocessing``'s forkserver): still a real process of its own, with its own pid,
environment, working directory, files and signals, running the same command's code, but
ready in a fraction of the time. The test suite starts hundreds of processes and uses it;
what it cannot show (a command that fails to import, the installed entry point) is shown
by the tests that run ``trm-broker`` itself (the demo, the wheel, ``bench.startup``).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Protocol


class Child(Protocol):
    """A started process, as much of :class:`subprocess.Popen` as the cluster uses."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class Completed:
    """A command run to its end: its exit status and what it wrote."""

    returncode: int
    stdout: str
    stderr: str


class Launcher(Protocol):
    def start(self, args: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Child:
        """Start ``trm-broker <args>`` with exactly ``env``, in ``cwd``, its stdout and
        stderr appended to ``log``."""
        ...

    def run(
        self,
        args: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        *,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> Completed:
        """Run ``trm-broker <args>`` to its end (killed after ``timeout`` seconds)."""
        ...


def command(*args: str) -> list[str]:
    """The command line of ``trm-broker <args>`` with this interpreter."""
    return [sys.executable, "-m", "trm_broker.cli", *args]


class Subprocesses:
    """Each process a new interpreter: ``python -m trm_broker.cli``."""

    def start(self, args: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Child:
        with log.open("ab") as out:
            return subprocess.Popen(
                command(*args), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
            )

    def run(
        self,
        args: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        *,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> Completed:
        done = subprocess.run(
            command(*args),
            env=env,
            cwd=cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Completed(done.returncode, done.stdout, done.stderr)


#: What a forked `trm-broker` finds loaded: the command line and everything its servers
#: and commands import (each command loads only what it runs, see cli/app.py).
PRELOAD = (
    "trm_broker.cli.app",
    "trm_broker.web.server",
    "trm_broker.api.app",
    "trm_broker.node.app",
    "trm_broker.node.users",
    "trm_broker.node.migrate",
    "trm_broker.store.migrate",
    "trm_broker.cli.ledger_reader",
    "alembic.command",
    "alembic.config",
    "uvloop",
    "httptools",
)


class Preloaded:
    """Each process forked from one server that has loaded :data:`PRELOAD` (started on the
    first use, once per process that uses it)."""

    def __init__(self, preload: Sequence[str] = PRELOAD) -> None:
        self._context: ForkServerContext = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(preload))
        self._started: list[_Forked] = []
        # multiprocessing waits at exit for every process it started: one left running
        # (a test that failed before stopping its cluster) would hold this process forever.
        atexit.register(self.kill_all)

    def kill_all(self) -> None:
        """SIGKILL every process started here that still runs."""
        for child in self._started:
            child.kill()
            child.wait()
        self._started.clear()

    def start(self, args: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Child:
        return self._fork(args, env, cwd, _Streams(stdout=str(log), stderr=str(log)))

    def run(
        self,
        args: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        *,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> Completed:
        with tempfile.TemporaryDirectory(prefix="trm-run-") as tmp:
            folder = Path(tmp)
            streams = _Streams(stdout=str(folder / "out"), stderr=str(folder / "err"))
            if input is not None:
                (folder / "in").write_text(input, encoding="utf-8")
                streams.stdin = str(folder / "in")
            child = self._fork(args, env, cwd, streams)
            try:
                code = child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise
            return Completed(code, _read(folder / "out"), _read(folder / "err"))

    def _fork(
        self, args: Sequence[str], env: dict[str, str], cwd: Path, streams: _Streams
    ) -> Child:
        process = self._context.Process(
            target=_main, args=(list(args), dict(env), str(cwd), streams), name="trm-broker"
        )
        process.start()
        child = _Forked(process, list(args))
        self._started = [c for c in self._started if c.poll() is None]
        self._started.append(child)
        return child


@dataclass
class _Streams:
    stdout: str
    stderr: str
    stdin: str | None = None


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


class _Forked:
    """A forked process behind :class:`Child`'s face. Its exit status comes from the
    forkserver (its parent), so ``wait`` works as for a child of this process."""

    def __init__(self, process: BaseProcess, args: list[str]) -> None:
        self._process, self._args = process, args
        self._pid = process.pid or 0
        self._code: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        if self._code is None:
            self._code = self._process.exitcode
            if self._code is not None:
                self._process.close()  # its pipe to the forkserver: not one per process kept
        return self._code

    def wait(self, timeout: float | None = None) -> int:
        if self._code is None:
            self._process.join(timeout)
        code = self.poll()
        if code is None:
            raise subprocess.TimeoutExpired(command(*self._args), timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self._pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _main(args: list[str], env: dict[str, str], cwd: str, streams: _Streams) -> None:
    """In the forked process: become ``trm-broker <args>`` as a new interpreter would be,
    with exactly ``env``, in ``cwd``, writing to ``streams``."""
    for fd, path in ((1, streams.stdout), (2, streams.stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(target, fd)
        os.close(target)
    if streams.stdin is not None:
        source = os.open(streams.stdin, os.O_RDONLY)
        os.dup2(source, 0)
        os.close(source)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's own
    os.environ.clear()
    os.environ.update(env)
    time.tzset()  # TZ as given, as a new interpreter reads it at its start
    os.chdir(cwd)
    sys.argv = ["trm-broker", *args]
    from trm_broker.cli.app import app

    app()
