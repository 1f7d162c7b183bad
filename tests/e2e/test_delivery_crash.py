"""Crashes under load (issue 6): senders keep sending signed messages while the broker (and,
on PostgreSQL, the separate `trm-broker worker` doing its deliveries) is killed with SIGKILL
at random moments and started again, TRM_CHAOS_KILLS times (6; `make chaos`: 200).

Afterwards every message a sender holds a receipt for is stored at its recipient's node
exactly once, nothing else is, each case arrived in the order it was accepted, and the
broker shows each delivery acknowledged with exactly one ledger entry saying so.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest

from tests.e2e.load import (
    FAST_DELIVERY,
    BrokerView,
    LoadGenerator,
    Sent,
    chaos_kills,
    chaos_rng,
    check_delivery,
    count_delivery,
    crash_loop,
    kills_summary,
    logs_hint,
    two_countries,
)
from trm_broker.dev.cluster import LocalCluster

KILLS = chaos_kills()

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180 + 15 * KILLS)]


async def test_no_message_lost_or_duplicated_when_the_broker_is_killed(
    tmp_path: Path, backend: str, broker_database: str | None
) -> None:
    seed, rng = chaos_rng()
    started = time.monotonic()
    with LocalCluster(tmp_path, broker_database, dict(FAST_DELIVERY)) as cluster:
        cluster.migrate()
        cluster.init_operator()
        if backend == "sqlite":
            broker = cluster.start_broker()  # the dispatcher runs inside it
            choices: list[tuple[str, ...]] = [("broker",)]
            parties = await two_countries(cluster)
        else:
            broker = cluster.start_broker(TRM_RUN_DISPATCHER="false")
            choices = [("broker",), ("worker",), ("broker", "worker")]
            parties = await two_countries(cluster, cluster.start_worker)
        load = LoadGenerator([broker.url], parties, rng)
        stop = asyncio.Event()
        sending = asyncio.create_task(load.run(stop))
        try:
            # The chaos begins once messages flow (however long a busy machine takes).
            await load.receipted_since(started)
            chaos_began = time.monotonic()
            kills = await crash_loop(cluster, choices, KILLS, rng)
        finally:
            stop.set()
            await sending
        phases = (
            f"setup {chaos_began - started:.1f} s, chaos {time.monotonic() - chaos_began:.1f} s"
        )
        report = await check_delivery(
            f"crash {backend}, seed {seed}",
            load,
            [p.node for p in parties],
            cluster.database_url,
            started,
        )
        print(f"\n{report.summary()}\n  {kills_summary(kills)}; {phases}")
        detail = (
            f"{report.summary()}\n{kills_summary(kills)}\n{logs_hint(cluster, not report.clean)}\n"
            + "\n".join(
                f"  kill {k.round}: {'+'.join(k.names)} at {k.at:.2f} s (epoch {k.wall_clock:.3f})"
                for k in kills
            )
        )
    assert len(kills) == KILLS
    assert report.receipted > 0, detail
    assert report.sent == report.receipted, detail
    assert (report.lost, report.duplicated, report.unexpected) == (0, 0, 0), detail
    assert report.delivered == report.receipted, detail
    assert report.out_of_order == 0, detail
    assert report.altered == 0, detail
    assert (report.not_acknowledged, report.ack_entries_not_one) == (0, 0), detail


def test_the_count_sees_every_kind_of_delivery_fault() -> None:
    """The comparison itself: each fault the crash tests look for is counted, so a clean
    report of a real run means something."""
    load = LoadGenerator([], cast(Any, ()), random.Random(0))  # noqa: S311 - not crypto
    receipted = [(1, "C1", 0), (2, "C1", 1), (3, "C1", 2), (4, "C2", 0), (5, "C3", 0), (6, "C4", 0)]
    load.sent = [
        Sent(f"m{n}", case, "a", "b", "risk_assessment", {"n": n}, position, receipt_at=float(n))
        for n, case, position in receipted
    ]
    load.sent.append(Sent("m7", "C5", "a", "b", "risk_assessment", {}, 0))  # no receipt

    def item(seq: int, message_id: str, case: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "node": "node-b",
            "seq": seq,
            "message_id": message_id,
            "type": "risk_assessment",
            "case_ref": case,
            "sender": "a",
            "recipient": "b",
            "payload": payload,
        }

    stored = [
        item(1, "m1", "C1", {"n": 1}),
        item(2, "m3", "C1", {"n": 3}),  # C1 arrives 1, 3, 2: out of order
        item(3, "m2", "C1", {"n": 2}),
        item(4, "m4", "C2", {"n": 4}),
        item(5, "m4", "C2", {"n": 4}),  # stored twice
        item(6, "m6", "C4", {"n": "changed"}),  # altered; m5 never arrives: lost
        item(7, "m9", "C9", {}),  # never receipted: unexpected
    ]
    ids = [f"m{n}" for n, _, _ in receipted]
    view = BrokerView(
        {i: "pending" if i == "m5" else "acknowledged" for i in ids},
        dict.fromkeys(ids, 1),
        Counter({**dict.fromkeys(ids, 1), "m2": 2, "m5": 0}),
    )
    report = count_delivery("self-test", load, stored, view, Counter({"m1": 2}), 0.0)
    assert (report.sent, report.receipted, report.delivered) == (7, 6, 5), report.summary()
    assert (report.lost, report.duplicated, report.unexpected) == (1, 1, 1), report.summary()
    assert (report.out_of_order, report.altered) == (1, 1), report.summary()
    assert (report.not_acknowledged, report.ack_entries_not_one) == (1, 2), report.summary()
    assert report.repushed == 1, report.summary()
    assert not report.clean

    # The same run without the faults is clean.
    load.sent = load.sent[:4]
    in_order = [stored[0], {**stored[2], "seq": 2}, {**stored[1], "seq": 3}, stored[3]]
    fine = BrokerView(
        dict.fromkeys(ids[:4], "acknowledged"), {}, Counter(dict.fromkeys(ids[:4], 1))
    )
    clean = count_delivery("self-test", load, in_order, fine, Counter(), 0.0)
    assert clean.clean, clean.summary()
