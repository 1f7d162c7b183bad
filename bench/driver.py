"""Running wrk over a request pool (bench/pool.py, bench/wrk/pool.lua) and reading what a
server process used: CPU time and peak RSS from /proc."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LUA = Path(__file__).with_name("wrk") / "pool.lua"


@dataclass
class WrkRun:
    """One wrk run: answers by status, the rate of 2xx, latency (ms), the client's CPU."""

    connections: int
    seconds: float
    pooled: int
    sent: int
    answered: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    client_cpu_seconds: float
    server_cpu_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.statuses.items() if code.startswith("2"))

    @property
    def failed(self) -> bool:
        """Any answer not 2xx, or a socket error (requests still in flight when the time is
        up are not answers)."""
        return self.ok != self.answered or any(self.socket_errors.values())

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def client_cpu_share(self) -> float:
        """The client's CPU time over the run's wall time (1.0: one core busy)."""
        return self.client_cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def server_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_seconds / self.ok if self.ok else 0.0


def wrk_path() -> str | None:
    return shutil.which(os.environ.get("TRM_BENCH_WRK", "wrk"))


def processes(pid: int) -> list[int]:
    """``pid`` and its children (a broker with TRM_PROCESSES above 1 serves from those)."""
    found = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        found += [int(child) for child in children.read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children (/proc/<pid>/stat)."""
    total = 0
    for each in processes(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The peak resident set (VmHWM) of a process and its children, added up, in MiB."""
    total = 0
    for each in processes(pid):
        try:
            lines = Path(f"/proc/{each}/status").read_text().splitlines()
        except FileNotFoundError:
            continue
        total += next((int(x.split()[1]) for x in lines if x.startswith("VmHWM:")), 0)
    return total / 1024


def run_wrk(
    url: str,
    pool: Path,
    connections: int,
    seconds: float,
    *,
    rate: float = 0.0,
    times: Path | None = None,
    server_pid: int | None = None,
) -> WrkRun:
    """wrk against ``url`` with the requests of ``pool``, each once, for at most ``seconds``
    (less once every request is answered); ``rate``: offered requests per second."""
    binary = wrk_path()
    if binary is None:
        raise RuntimeError("wrk is not installed (tools/ensure-wrk.sh installs it)")
    threads = max(1, min(2, connections))
    args = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        url,
        "--",
        str(pool),
        str(threads),
        str(rate),
        str(pool) + ".done",
    ]
    if times is not None:
        args.append(str(times))
    markers = [Path(f"{pool}.done.{n}") for n in range(threads)]
    for marker in markers:
        marker.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:  # noqa: S603
        deadline = time.monotonic() + seconds + 30
        while wrk.poll() is None and time.monotonic() < deadline:
            if all(m.exists() for m in markers):
                wrk.send_signal(signal.SIGINT)  # every thread is done: wrk prints and exits
                break
            time.sleep(0.05)
        out, err = wrk.communicate(timeout=seconds + 60)
    server_after = cpu_seconds(server_pid) if server_pid else 0.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [x for x in out.splitlines() if x.startswith("TRM-BENCH ")]
    if wrk.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {err[-1000:]}")
    summary = json.loads(lines[-1].removeprefix("TRM-BENCH "))
    latency = summary["latency_us"]
    return WrkRun(
        connections=connections,
        seconds=summary["duration_us"] / 1e6,
        pooled=summary["pooled"],
        sent=summary["sent"],
        answered=summary["answered"],
        statuses=summary["statuses"],
        socket_errors=summary["errors"],
        latency_ms={k: v / 1000 for k, v in latency.items()},
        client_cpu_seconds=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        server_cpu_seconds=server_after - server_before,
    )
