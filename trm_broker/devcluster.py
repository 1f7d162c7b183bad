"""Real broker and node processes on free loopback ports: for `trm-broker demo` and e2e tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from trm_broker.crypto.keys import KeySet


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Node:
    process: Process
    api_token: str
    keysets: list[KeySet]

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def inbox_url(self) -> str:
        return self.process.url + "/inbox"


@dataclass
class LocalCluster:
    """A broker and any number of nodes, each a real `trm-broker` process with its own files."""

    workdir: Path
    broker_database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    operator: KeySet | None = None
    processes: list[Process] = field(default_factory=list)
    broker: Process | None = None

    def __enter__(self) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    @property
    def database_url(self) -> str:
        return self.broker_database_url or f"sqlite+aiosqlite:///{self.workdir / 'broker.db'}"

    def _env(self, **values: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
        env.update(self.extra_env)
        env.update(values)
        return env

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "trm_broker.cli", *args]

    def _spawn(self, name: str, port: int, args: list[str], env: dict[str, str]) -> Process:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                self._cli(*args), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        process = Process(name, f"http://127.0.0.1:{port}", popen, log_path)
        self.processes.append(process)
        _wait_healthy(process)
        return process

    def broker_env(self) -> dict[str, str]:
        return self._env(
            TRM_DATABASE_URL=self.database_url,
            TRM_BROKER_KEY_FILE=str(self.workdir / "broker-key.json"),
            TRM_DELIVERY_POLL_SECONDS="0.5",
            TRM_ALLOW_LOOPBACK_INBOXES="true",
            TRM_DELIVERY_BACKOFF_MAX_SECONDS="2",
        )

    def migrate(self) -> None:
        subprocess.run(
            self._cli("db", "upgrade"),
            env=self.broker_env(),
            check=True,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
        )

    def init_operator(self, participant: str = "operator.demo", country: str = "AT") -> KeySet:
        """`trm-broker operator init`: the first operator, whose key signs registry changes."""
        key_file = self.workdir / "operator-key.json"
        subprocess.run(
            self._cli(
                "operator",
                "init",
                "--id",
                participant,
                "--country",
                country,
                "--operator-key",
                str(key_file),
            ),
            env=self.broker_env(),
            check=True,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
        )
        self.operator = KeySet.read(key_file)
        return self.operator

    def start_broker(self) -> Process:
        port = free_port()
        env = self.broker_env()
        env.update(TRM_HOST="127.0.0.1", TRM_PORT=str(port))
        self.broker = self._spawn("broker", port, ["serve"], env)
        return self.broker

    def start_node(self, name: str, participants: list[str]) -> Node:
        if self.broker is None:
            raise RuntimeError("start the broker first")
        keysets = []
        for participant in participants:
            path = self.workdir / f"{participant}.keys.json"
            if not path.exists():
                KeySet.generate(participant).write(path)
            keysets.append(KeySet.read(path))
        port = free_port()
        token = secrets.token_urlsafe(24)
        env = self._env(
            TRM_NODE_DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir / (name + '.db')}",
            TRM_NODE_HOST="127.0.0.1",
            TRM_NODE_PORT=str(port),
            TRM_NODE_BROKER_URL=self.broker.url,
            TRM_NODE_KEY_FILES=",".join(str(self.workdir / f"{p}.keys.json") for p in participants),
            TRM_NODE_API_TOKEN=token,
        )
        process = self._spawn(name, port, ["node", "serve"], env)
        return Node(process, token, keysets)


def _wait_healthy(process: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited at start:\n{process.log_text()[-3000:]}")
        try:
            if httpx.get(process.url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not become healthy:\n{process.log_text()[-3000:]}")
