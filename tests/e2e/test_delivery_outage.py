"""A node away under load (issue 6): a node process is stopped (SIGTERM) while senders keep
sending to it, then started again on the same port and database (its inbox URL is in the
registry). Once it is back, it has everything, each case in the order the broker accepted
it, nothing lost or twice. `make chaos` repeats the outage TRM_CHAOS_SCALE times, on SQLite
and on PostgreSQL (the normal suite: once, on SQLite).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.e2e.load import (
    FAST_DELIVERY,
    LoadGenerator,
    chaos_rng,
    chaos_scale,
    check_delivery,
    logs_hint,
    two_countries,
)
from trm_broker.dev.cluster import LocalCluster

OUTAGES = chaos_scale()
#: The normal suite runs it on SQLite (its time is counted); `make chaos` on PostgreSQL too.
BACKENDS = ["sqlite", "postgresql"] if OUTAGES > 1 else ["sqlite"]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240 + 30 * OUTAGES)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_node_back_from_an_outage_gets_everything_in_order(
    tmp_path: Path, backend: str, broker_database: str | None
) -> None:
    seed, rng = chaos_rng()
    started = time.monotonic()
    with LocalCluster(tmp_path, broker_database, dict(FAST_DELIVERY)) as cluster:
        cluster.migrate()
        cluster.init_operator()
        broker = cluster.start_broker()
        parties = await two_countries(cluster)
        load = LoadGenerator([broker.url], parties, rng)
        stop = asyncio.Event()
        sending = asyncio.create_task(load.run(stop))
        away: list[tuple[str, float, float]] = []  # node, stopped at, back at (monotonic)
        try:
            await load.receipted_since(started)  # messages flow
            for outage in range(OUTAGES):
                await asyncio.sleep(rng.uniform(1.0, 2.0))
                party = parties[(outage + 1) % 2]  # Nigeria's first, then in turn
                node = party.node
                await asyncio.to_thread(node.process.stop)
                down_at = time.monotonic()
                await asyncio.sleep(rng.uniform(4.0, 5.0))
                # Away until a message to it was receipted meanwhile (a busy machine sends
                # slowly): the outage must matter.
                await load.receipted_since(down_at, recipient=party.id)
                await asyncio.to_thread(cluster.restart_node, node)
                away.append((node.process.name, down_at, time.monotonic()))
            await asyncio.sleep(2.0)  # load goes on a while after the last return
        finally:
            stop.set()
            await sending
        report = await check_delivery(
            f"outage {backend}, seed {seed}",
            load,
            [p.node for p in parties],
            cluster.database_url,
            started,
        )
        nodes = {p.id: p.node.process.name for p in parties}
        # Messages that reached the broker while their recipient's node was away: the proof
        # that the outage mattered (they had to wait, and be retried).
        waited = sum(
            1
            for s in load.receipted
            for name, down, back in away
            if nodes[s.recipient] == name
            and s.receipt_at is not None
            and down <= s.receipt_at <= back
        )
        outages = ", ".join(f"{name} {back - down:.1f} s" for name, down, back in away)
        print(f"\n{report.summary()}\n  outages: {outages}; receipted while away: {waited}")
        failed = not report.clean or not waited or not report.retried_deliveries
        detail = f"{report.summary()}\noutages: {outages}\n{logs_hint(cluster, failed)}"
    assert len(away) == OUTAGES
    assert waited > 0, f"no message was sent to a node while it was away\n{detail}"
    assert report.retried_deliveries > 0, detail
    assert report.sent == report.receipted > 0, detail
    assert (report.lost, report.duplicated, report.unexpected) == (0, 0, 0), detail
    assert report.delivered == report.receipted, detail
    assert report.out_of_order == 0, detail
    assert report.altered == 0, detail
    assert (report.not_acknowledged, report.ack_entries_not_one) == (0, 0), detail
