"""End-to-end latency (issue 21): from the sender's POST to the recipient node's signed
acknowledgement, at fixed offered rates. A broker (`trm-broker serve`, its own dispatcher)
pushes to a real node process (`trm-broker node serve`) that verifies, decrypts, stores and
acknowledges with its signature; the broker records when that acknowledgement came back.

wrk sends on a schedule (open loop), so a slow broker does not slow the sender down: each
latency counts from the time its request was due, not from when a busy connection got to
send it. The broker "kept up" if wrk sent the offered rate and every acknowledgement came
in within the drain time after the last send.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from bench import pool, servers
from bench.driver import peak_rss_mb, run_wrk
from trm_broker.store.database import create_engine
from trm_broker.store.models import Delivery, Message

#: Open loop needs a free connection at every send slot, also while answers are slow: at
#: least 64, and half a second's worth of the offered rate (64 gave only ~200 sends/s at an
#: offered 500 once the broker fell behind: every connection waited on an answer).
MIN_CONNECTIONS = 64


def connections_for(rate: float) -> int:
    return max(MIN_CONNECTIONS, int(rate / 2))


DRAIN_SECONDS = 30.0
#: The most messages one rate sends (500/s: 5 s), each with its consent registered first.
MAX_MESSAGES = 2500


@dataclass
class Latency:
    rate: float
    seconds: float
    sent: int
    accepted: int
    acknowledged: int
    send_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    drained_after_s: float | None
    statuses: dict[str, int]

    @property
    def kept_up(self) -> bool:
        return (
            self.acknowledged == self.sent
            and self.accepted == self.sent
            and self.send_rate >= 0.95 * self.rate
            and self.drained_after_s is not None
        )

    def json(self) -> dict[str, object]:
        return {**self.__dict__, "kept_up": self.kept_up}


async def _acknowledged(url: str) -> dict[str, float]:
    """Case reference → when the broker had the recipient's acknowledgement (epoch s)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(Message.case_ref, Delivery.acknowledged_at)
                .join(Delivery, Delivery.message_id == Message.id)
                .where(Delivery.acknowledged_at.is_not(None))
            )
            return {ref: at.timestamp() for ref, at in rows.all() if at is not None}
    finally:
        await engine.dispose()


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def at_rate(
    database: str, url: str, pid: int, sender: pool.Pair, rate: float, seconds: float, n: int
) -> Latency:
    """One offered rate for ``seconds``; cases numbered from ``n``."""
    count = max(1, min(MAX_MESSAGES, int(rate * seconds)))
    seconds = count / rate
    run = f"E{n}"
    with tempfile.TemporaryDirectory(prefix="trm-bench-e2e-") as tmp:
        consents, referrals = Path(tmp) / "c.pool", Path(tmp) / "m.pool"
        pool.write(consents, pool.consents(url, sender, run, 0, count))
        run_wrk(url, consents, 16, 600, server_pid=pid)
        pool.write(referrals, pool.referrals(url, sender, run, 0, count))
        times = Path(tmp) / "times"
        sent = run_wrk(
            url,
            referrals,
            connections_for(rate),
            seconds + 30,
            rate=rate,
            times=times,
            server_pid=pid,
        )
        scheduled: dict[str, float] = {}
        sent_at: list[float] = []
        for line in times.read_text().splitlines():
            index, due, at = line.split()
            scheduled[pool.case_ref(run, int(index))] = float(due)
            sent_at.append(float(at))
    last_send = max(sent_at) if sent_at else time.time()
    drained = None
    acks: dict[str, float] = {}
    while time.time() < last_send + DRAIN_SECONDS:
        acks = {k: v for k, v in asyncio.run(_acknowledged(database)).items() if k in scheduled}
        if len(acks) >= sent.ok:
            drained = max(0.0, max(acks.values(), default=last_send) - last_send)
            break
        time.sleep(0.5)
    latencies = [1000 * (acks[ref] - due) for ref, due in scheduled.items() if ref in acks]
    span = (max(sent_at) - min(sent_at)) if len(sent_at) > 1 else seconds
    return Latency(
        rate=rate,
        seconds=round(span, 2),
        sent=sent.sent,
        accepted=sent.ok,
        acknowledged=len(acks),
        send_rate=round(len(sent_at) / span, 1) if span else 0.0,
        p50_ms=_percentile(latencies, 50),
        p95_ms=_percentile(latencies, 95),
        p99_ms=_percentile(latencies, 99),
        max_ms=max(latencies) if latencies else None,
        drained_after_s=None if drained is None else round(drained, 2),
        statuses=sent.statuses,
    )


def measure(rates: list[float], seconds: float) -> tuple[list[Latency], list[float], float]:
    """Each rate in turn against one broker on PostgreSQL and one node; the rates left out
    (a backlog that did not drain would distort them: the broker did not keep up at a lower
    one); the broker's peak RSS (MiB)."""
    results: list[Latency] = []
    skipped: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp,
        servers.broker("postgresql", Path(tmp), with_node=True) as (cluster, s, r),
    ):
        if cluster.broker is None:
            raise RuntimeError("no broker")
        process = cluster.broker
        for n, rate in enumerate(rates):
            if results and results[-1].drained_after_s is None:
                skipped.append(rate)
                print(f"  {rate:>5.0f} messages/s offered: not run (a backlog remains)")
                continue
            found = at_rate(
                cluster.database_url,
                process.url,
                process.popen.pid,
                pool.Pair(s, r),
                rate,
                seconds,
                n,
            )
            results.append(found)
            print(
                f"  {rate:>5.0f} messages/s offered: p50 {_ms(found.p50_ms)}, p99 "
                f"{_ms(found.p99_ms)}, max {_ms(found.max_ms)}; "
                f"{found.acknowledged}/{found.sent} acknowledged; "
                f"{'kept up' if found.kept_up else 'did NOT keep up'}"
            )
        rss = peak_rss_mb(process.popen.pid)
    return results, skipped, rss


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
