"""Accept throughput (issue 21): wrk posting pre-signed, never-repeated requests to a broker
process, at several connection counts. Each round first registers the consents its
referrals cite (``POST /v1/consents``, measured: the consent bench), then sends the
referrals (``POST /v1/messages``, ~1 KiB sealed payloads, consent and workflow checks on).

A round sends its pool once: it ends after ``seconds`` or when every request is answered
(the pool is sized from the rate seen so far; the figures say how long each round ran).
A round with any answer that is not 2xx is reported as failed and left out of the median.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import pool, servers
from bench.driver import WrkRun, peak_rss_mb, run_wrk
from trm_broker.dev.cluster import LocalCluster

#: The most referrals one round pre-generates (about 3.5 ms each with its consent).
MAX_POOL = 20_000


@dataclass
class Rounds:
    """The rounds at one connection count: those that failed are kept, not averaged."""

    connections: int
    runs: list[WrkRun] = field(default_factory=list)

    @property
    def good(self) -> list[WrkRun]:
        return [r for r in self.runs if not r.failed]

    def median(self, value: str) -> float | None:
        """The median of a :class:`WrkRun` property over the rounds that did not fail."""
        values: list[float] = [getattr(r, value) for r in self.good]
        return statistics.median(values) if values else None

    def median_latency(self, key: str) -> float | None:
        values = [r.latency_ms[key] for r in self.good]
        return statistics.median(values) if values else None

    def summary(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "rounds": len(self.runs),
            "failed_rounds": len(self.runs) - len(self.good),
            "rate": self.median("rate"),
            "p50_ms": self.median_latency("p50"),
            "p99_ms": self.median_latency("p99"),
            "max_ms": self.median_latency("max"),
            "server_cpu_ms_per_request": self.median("server_ms_per_request"),
            "client_cpu_share": self.median("client_cpu_share"),
            "runs": [_run_json(r) for r in self.runs],
        }


def _run_json(run: WrkRun) -> dict[str, object]:
    return {
        "seconds": round(run.seconds, 2),
        "rate": round(run.rate, 1),
        "sent": run.sent,
        "answered": run.answered,
        "statuses": run.statuses,
        "socket_errors": {k: v for k, v in run.socket_errors.items() if v},
        "latency_ms": run.latency_ms,
        "client_cpu_seconds": round(run.client_cpu_seconds, 2),
        "server_cpu_ms_per_request": round(run.server_ms_per_request, 2),
        "failed": run.failed,
    }


@dataclass
class AcceptResult:
    backend: str
    ledger_entries: int
    messages: list[Rounds]
    consents: list[Rounds]
    broker_peak_rss_mb: float
    #: What ``after`` measured on the same broker (the growth bench: the verifier's run).
    extra: dict[str, object] = field(default_factory=dict)

    def at(self, connections: int, kind: str = "messages") -> Rounds | None:
        rounds = self.messages if kind == "messages" else self.consents
        return next((r for r in rounds if r.connections == connections), None)

    def json(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "ledger_entries": self.ledger_entries,
            "messages": [r.summary() for r in self.messages],
            "consents": [r.summary() for r in self.consents],
            "broker_peak_rss_mb": round(self.broker_peak_rss_mb, 1),
            **self.extra,
        }


class Sender:
    """Pools of consents and referrals for one broker, case numbers never repeated."""

    def __init__(self, url: str, pair: pool.Pair, workdir: Path) -> None:
        self.url, self.pair, self.workdir = url, pair, workdir
        self.run = f"{int(time.time()) % 100000:05d}"
        self.next = 0
        self.pending = (0, 0)

    def consents(self, count: int) -> Path:
        """The registrations of the next ``count`` cases' consents."""
        first, self.next = self.next, self.next + count
        path = self.workdir / f"consents-{first}.pool"
        pool.write(path, pool.consents(self.url, self.pair, self.run, first, count))
        self.pending = (first, count)
        return path

    def referrals(self) -> Path:
        """The referrals of the cases whose consents :meth:`consents` made last: signed
        only now, once those are registered, so they are fresh when sent."""
        first, count = self.pending
        path = self.workdir / f"referrals-{first}.pool"
        pool.write(path, pool.referrals(self.url, self.pair, self.run, first, count))
        return path


def rounds(
    url: str,
    pid: int,
    sender: Sender,
    plan: list[tuple[int, int]],
    seconds: float,
    warmup: float,
    estimate: float,
    smallest: int = 200,
) -> tuple[list[Rounds], list[Rounds]]:
    """Run ``plan`` (connections, repetitions) after a warm-up; per-count rounds of the
    referrals and of the consents registered for them."""
    run_wrk(
        url, sender.consents(max(smallest // 4, int(estimate * warmup))), 16, 600, server_pid=pid
    )
    warm = run_wrk(url, sender.referrals(), 16, warmup, server_pid=pid)
    estimate = max(estimate, warm.rate)
    messages_by, consents_by = [], []
    for connections, repetitions in plan:
        m, c = Rounds(connections), Rounds(connections)
        for _ in range(repetitions):
            size = min(MAX_POOL, max(smallest, int(estimate * seconds * 1.3)))
            registered = run_wrk(url, sender.consents(size), connections, 600, server_pid=pid)
            c.runs.append(registered)
            sent = run_wrk(url, sender.referrals(), connections, seconds, server_pid=pid)
            m.runs.append(sent)
            if not sent.failed:
                estimate = max(estimate, sent.rate)
            print(
                f"  {connections:>3} connections: {sent.rate:7.1f} messages/s over "
                f"{sent.seconds:4.1f} s, p99 {sent.latency_ms['p99']:.0f} ms"
                f"{' FAILED ' + str(sent.statuses) if sent.failed else ''}; consents "
                f"{registered.rate:6.1f}/s{' FAILED' if registered.failed else ''}"
            )
        messages_by.append(m)
        consents_by.append(c)
    return messages_by, consents_by


def measure(
    backend: str,
    plan: list[tuple[int, int]],
    seconds: float,
    warmup: float,
    *,
    preload: int = 0,
    estimate: float = 100.0,
    smallest: int = 200,
    after: Callable[[LocalCluster], dict[str, object]] | None = None,
    processes: int = 1,
) -> AcceptResult:
    """One broker on a fresh database (``preload``: that many ledger entries bulk-loaded
    first), measured along ``plan``; then ``after`` on the same broker."""
    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        workdir = Path(tmp)
        with servers.broker(backend, workdir, preload=preload, processes=processes) as (
            cluster,
            sender,
            recipient,
        ):
            if cluster.broker is None:
                raise RuntimeError("no broker")
            process = cluster.broker
            generator = Sender(process.url, pool.Pair(sender, recipient), workdir)
            by_messages, by_consents = rounds(
                process.url,
                process.popen.pid,
                generator,
                plan,
                seconds,
                warmup,
                estimate,
                smallest,
            )
            rss = peak_rss_mb(process.popen.pid)
            extra = after(cluster) if after is not None else {}
    return AcceptResult(backend, preload, by_messages, by_consents, rss, extra)


def after_preload(
    backend: str, preload: int, then: Callable[[LocalCluster], dict[str, object]]
) -> dict[str, object]:
    """``then`` on a broker over a fresh database with ``preload`` ledger entries
    bulk-loaded, without accept rounds (`python -m bench --only verify`)."""
    with (
        tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp,
        servers.broker(backend, Path(tmp), preload=preload) as (cluster, _, _),
    ):
        return then(cluster)
