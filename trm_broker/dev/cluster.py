"""Real broker and node processes on free loopback ports: for `trm-broker demo` and e2e tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from trm_broker.crypto import broker_keys
from trm_broker.crypto.keys import KeySet
from trm_broker.dev.launch import Child, Completed, Launcher, Subprocesses
from trm_broker.node.trust import pin_entry

#: Ports this process handed out: the kernel may offer a port again as soon as the probe
#: socket closes, and two processes started at once (a broker and a worker) must not both
#: be given it, or one answers health checks for the other that failed to bind.
_handed_out: set[int] = set()
_handing = threading.Lock()
#: How clusters made without a launcher of their own start their processes (the test
#: suite sets :class:`~trm_broker.dev.launch.Preloaded`: see :func:`use_launcher`).
_default_launcher: list[Launcher] = [Subprocesses()]


def use_launcher(launcher: Launcher) -> None:
    """Start the processes of every cluster made from now on with ``launcher``."""
    _default_launcher[0] = launcher


def default_launcher() -> Launcher:
    """What starts the processes of a cluster made now (:func:`use_launcher`)."""
    return _default_launcher[0]


def free_port() -> int:
    with _handing:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


@dataclass
class Process:
    """One `trm-broker` process. ``args``, ``env`` and ``port`` are what it was started with,
    so :meth:`LocalCluster.restart` starts it again the same way, on the same port."""

    name: str
    url: str
    popen: Child
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as in a crash or a power cut."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


@dataclass
class Node:
    process: Process
    #: The administrator's token (TRM_NODE_API_TOKEN): every organisation the node serves.
    api_token: str
    keysets: list[KeySet]
    #: A case worker's token per organisation served (`trm-broker node users add`).
    user_tokens: dict[str, str] = field(default_factory=dict)

    def token_for(self, organisation: str | None) -> str:
        """The token of ``organisation``'s case worker (``None``: the node's only
        organisation's); the administrator's otherwise."""
        if organisation is None and len(self.user_tokens) == 1:
            return next(iter(self.user_tokens.values()))
        return self.user_tokens.get(organisation or "", self.api_token)

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
    launcher: Launcher = field(default_factory=default_launcher)

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

    def broker_env(self) -> dict[str, str]:
        # The cluster's short delivery timings, unless extra_env sets others.
        timings = {
            "TRM_DELIVERY_POLL_SECONDS": "0.5",
            "TRM_DELIVERY_BACKOFF_MAX_SECONDS": "2",
        }
        timings.update({k: v for k, v in self.extra_env.items() if k in timings})
        return self._env(
            TRM_DATABASE_URL=self.database_url,
            TRM_BROKER_KEY_FILE=str(self.workdir / "broker-key.json"),
            TRM_ALLOW_LOOPBACK_INBOXES="true",
            **timings,
        )

    def _run(
        self, *args: str, env: dict[str, str], input: str | None = None, what: str
    ) -> Completed:
        """Run a `trm-broker` command to its end; a failure raises, naming ``what``."""
        done = self.launcher.run(args, env, self.workdir, input=input)
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
        return done

    def _spawn(self, name: str, port_var: str, args: list[str], env: dict[str, str]) -> Process:
        """Start a process on a free port (set in ``env[port_var]``) and wait until it is
        healthy. Another socket may take the port between the choice and the bind: then it
        is started again on another one."""
        for attempt in range(3):
            port = free_port()
            process = self._launch(name, port, args, {**env, port_var: str(port)})
            try:
                _wait_healthy(process)
                return process
            except RuntimeError:
                if process.running or not _bind_failed(process.log_text()) or attempt == 2:
                    raise
                self.processes.remove(process)
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(
        self,
        name: str,
        port: int,
        args: list[str],
        env: dict[str, str],
        *,
        replaces: Process | None = None,
    ) -> Process:
        log_path = self.workdir / f"{name}.log"
        # A restarted process appends to its log, after a line saying so.
        with log_path.open("ab" if replaces is not None else "wb") as log:
            if replaces is not None:
                log.write(f"--- restarted at {time.time():.3f} ---\n".encode())
        popen = self.launcher.start(args, env, self.workdir, log_path)
        process = Process(name, f"http://127.0.0.1:{port}", popen, log_path, args, env, port)
        if replaces is not None and replaces in self.processes:
            self.processes[self.processes.index(replaces)] = process
        else:
            self.processes.append(process)
        if replaces is not None and self.broker is replaces:
            self.broker = process
        return process

    def restart(self, process: Process, timeout: float = 60.0) -> Process:
        """Start a stopped or killed process again: same command, environment, port, files
        (the broker's URL and the nodes' inbox URLs stay valid). Returns the new process;
        the cluster's ``broker`` follows if it was that one.

        A port just freed may be held a moment by another socket (a client's ephemeral
        port): a start that fails to bind it is tried again, a few times."""
        if process.running:
            raise RuntimeError(f"{process.name} is still running: stop or kill it first")
        current = process
        for attempt in range(5):
            logged = current.log_path.stat().st_size if current.log_path.exists() else 0
            current = self._launch(
                process.name, process.port, process.args, process.env, replaces=current
            )
            try:
                _wait_healthy(current, timeout)
                return current
            except RuntimeError:
                with current.log_path.open("rb") as log:
                    log.seek(logged)
                    started = log.read().decode("utf-8", errors="replace")
                if current.running or not _bind_failed(started) or attempt == 4:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")  # pragma: no cover

    def migrate(self) -> None:
        self._run("db", "upgrade", env=self.broker_env(), what="db upgrade")

    def init_operator(self, participant: str = "operator.demo", country: str = "AT") -> KeySet:
        """`trm-broker operator init`: the first operator, whose key signs registry changes."""
        key_file = self.workdir / "operator-key.json"
        self._run(
            "operator",
            "init",
            "--id",
            participant,
            "--country",
            country,
            "--operator-key",
            str(key_file),
            env=self.broker_env(),
            what="operator init",
        )
        self.operator = KeySet.read(key_file)
        return self.operator

    def start_broker(self, name: str = "broker", **env_values: str) -> Process:
        """`trm-broker serve` on a free port. The first one started is ``self.broker`` (the
        nodes' broker); more (e.g. two brokers on one PostgreSQL) need their own ``name``.
        ``env_values`` (e.g. ``TRM_RUN_DISPATCHER="false"``) go to this process only."""
        env = self.broker_env()
        env.update(env_values)
        env.update(TRM_HOST="127.0.0.1")
        process = self._spawn(name, "TRM_PORT", ["serve"], env)
        if self.broker is None:
            self.broker = process
        return process

    def start_worker(self, name: str = "worker", **env_values: str) -> Process:
        """`trm-broker worker`: a delivery dispatcher of its own, on the broker's database
        (PostgreSQL), answering /healthz on TRM_WORKER_PORT."""
        env = self.broker_env()
        env.update(env_values)
        env.update(TRM_HOST="127.0.0.1")
        return self._spawn(name, "TRM_WORKER_PORT", ["worker"], env)

    def start_node(self, name: str, participants: list[str]) -> Node:
        if self.broker is None:
            raise RuntimeError("start the broker first")
        keysets = []
        for participant in participants:
            path = self.workdir / f"{participant}.keys.json"
            if not path.exists():
                KeySet.generate(participant).write(path)
            keysets.append(KeySet.read(path))
        token = secrets.token_urlsafe(24)
        env = self._env(
            TRM_NODE_DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir / (name + '.db')}",
            TRM_NODE_HOST="127.0.0.1",
            TRM_NODE_BROKER_URL=self.broker.url,
            TRM_NODE_KEY_FILES=",".join(str(self.workdir / f"{p}.keys.json") for p in participants),
            TRM_NODE_API_TOKEN=token,
            **self.node_pins(),
        )
        user_tokens = {p: self._case_worker(p, env) for p in participants}
        process = self._spawn(name, "TRM_NODE_PORT", ["node", "serve"], env)
        return Node(process, token, keysets, user_tokens)

    def _case_worker(self, organisation: str, env: dict[str, str]) -> str:
        """A case worker of ``organisation`` at its node, made with the command an
        administrator uses; their token (printed once, alone on stdout)."""
        made = self._run(
            "node",
            "users",
            "add",
            f"case-worker@{organisation}",
            "--organisation",
            organisation,
            "--role",
            "case_worker",
            env=env,
            what=f"users add for {organisation}",
        )
        return made.stdout.strip()

    def set_password(self, node: Node, user: str, password: str) -> None:
        """Give ``user`` a password at ``node`` for the web app, with the command an
        administrator runs (`trm-broker node users password set --stdin`)."""
        self._run(
            "node",
            "users",
            "password",
            "set",
            user,
            "--stdin",
            env=node.process.env,
            input=password + "\n",
            what=f"password set for {user}",
        )

    def console_login(self, key_file: Path, vkey: str | None = None) -> str:
        """A one-time sign-in link to the broker's console for the auditor (or operator)
        whose keys are in ``key_file``, made as they make it (`trm-broker console login`),
        pinning the ledger's verifier key ``vkey`` if given."""
        if self.broker is None:
            raise RuntimeError("start the broker first")
        pin = ("--broker-key", vkey) if vkey else ()
        done = self._run(
            "console",
            "login",
            "--key",
            str(key_file),
            "--broker",
            self.broker.url,
            *pin,
            env=self._env(),
            what="console login",
        )
        return done.stdout.strip()

    def node_pins(self) -> dict[str, str]:
        """The nodes pin what the cluster knows first-hand, as a real deployment should
        (docs/node.md): the broker's keys from its key file (current and next), and the
        operator's key once `operator init` made it, unless ``extra_env`` pins others."""
        pins: dict[str, str] = {}
        key_file = self.workdir / "broker-key.json"
        if key_file.exists():
            keys = broker_keys.read(key_file)
            pinned = [keys.signing] if keys.next is None else [keys.signing, keys.next]
            pins["TRM_NODE_BROKER_KEYS"] = ",".join(pin_entry(k.kid, k.public_b64) for k in pinned)
        if self.operator is not None:
            signing = self.operator.signing
            pins["TRM_NODE_OPERATOR_KEYS"] = pin_entry(signing.kid, signing.public_b64)
        return {k: v for k, v in pins.items() if k not in self.extra_env}

    def restart_node(self, node: Node) -> Node:
        """Start a stopped node again on its port and database: its registered inbox URL
        stays valid, and what it received is still there."""
        node.process = self.restart(node.process)
        return node


def _bind_failed(log: str) -> bool:
    """Whether a process's start log says its port was taken (uvicorn: errno 98)."""
    return "address already in use" in log.lower()


def _wait_healthy(process: Process, timeout: float = 60.0) -> None:
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
