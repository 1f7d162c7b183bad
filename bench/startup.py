"""What it costs to start each of trm-broker's processes, as an operator (and the end-to-end
tests) start them: the CPU time and the wall time of `db upgrade`, `operator init`,
`node users add` (which also migrates a new node's database) and, until `/healthz` answers,
`serve` and `node serve` (a new node database, then the same one again). SQLite, in a
temporary folder; the median of ``--rounds`` rounds.

    python -m bench.startup [--rounds 5]

CPU time is the steadier figure on a shared machine: compare revisions by running this in
each checkout, one after the other, more than once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from trm_broker.crypto.keys import KeySet
from trm_broker.dev.cluster import free_port

CLI = [sys.executable, "-m", "trm_broker.cli"]
Figures = dict[str, tuple[float, float]]  # what → (CPU seconds, wall seconds)


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env.update(TRM_LOG_LEVEL="warning", **values)
    return env


def _command(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
        CLI + args, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"trm-broker {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return _children_cpu_delta(), wall


_last_children_cpu = 0.0


def _children_cpu_delta() -> float:
    """CPU seconds of the children waited for since the last call."""
    global _last_children_cpu
    times = os.times()
    total = times.children_user + times.children_system
    delta, _last_children_cpu = total - _last_children_cpu, total
    return delta


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server(args: list[str], env: dict[str, str], url: str) -> tuple[float, float]:
    """Start a server, wait for /healthz, stop it: (its CPU until ready, the wall time)."""
    started = time.perf_counter()
    popen = subprocess.Popen(  # noqa: S603 (our own CLI, fixed arguments)
        CLI + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            if popen.poll() is not None:
                raise SystemExit(f"trm-broker {' '.join(args)} exited with {popen.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                    return _process_cpu(popen.pid), time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    finally:
        popen.terminate()
        popen.wait(timeout=30)
        _children_cpu_delta()  # its CPU after ready is not counted


def one_round() -> Figures:
    figures: Figures = {}
    _children_cpu_delta()
    with tempfile.TemporaryDirectory(prefix="trm-startup-") as folder:
        work = Path(folder)
        port = free_port()
        broker = _env(
            TRM_DATABASE_URL=f"sqlite+aiosqlite:///{work / 'broker.db'}",
            TRM_BROKER_KEY_FILE=str(work / "broker-key.json"),
            TRM_HOST="127.0.0.1",
            TRM_PORT=str(port),
        )
        figures["db upgrade"] = _command(["db", "upgrade"], broker)
        operator = ["--id", "operator.demo", "--country", "AT"]
        key = ["--operator-key", str(work / "operator.json")]
        figures["operator init"] = _command(["operator", "init", *operator, *key], broker)
        broker_url = f"http://127.0.0.1:{port}"
        figures["serve (until ready)"] = _server(["serve"], broker, broker_url)
        keys = work / "ng.naptip.keys.json"
        KeySet.generate("ng.naptip").write(keys)
        node_port = free_port()
        node = _env(
            TRM_NODE_DATABASE_URL=f"sqlite+aiosqlite:///{work / 'node.db'}",
            TRM_NODE_HOST="127.0.0.1",
            TRM_NODE_PORT=str(node_port),
            TRM_NODE_BROKER_URL=broker_url,
            TRM_NODE_KEY_FILES=str(keys),
            TRM_NODE_API_TOKEN="startup-bench-" + "x" * 24,
        )
        user = ["case-worker@ng.naptip", "--organisation", "ng.naptip", "--role", "case_worker"]
        figures["node users add (new database)"] = _command(["node", "users", "add", *user], node)
        node_url = f"http://127.0.0.1:{node_port}"
        figures["node serve (until ready)"] = _server(["node", "serve"], node, node_url)
        figures["node serve again"] = _server(["node", "serve"], node, node_url)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown")
    args = parser.parse_args()
    rounds = [one_round() for _ in range(max(1, args.rounds))]
    print(f"{'process':34} {'CPU s':>7} {'wall s':>7}  (median of {len(rounds)})")
    total_cpu = 0.0
    for what in rounds[0]:
        cpu = statistics.median(r[what][0] for r in rounds)
        wall = statistics.median(r[what][1] for r in rounds)
        total_cpu += cpu
        print(f"{what:34} {cpu:7.2f} {wall:7.2f}")
    print(f"{'all of them':34} {total_cpu:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
