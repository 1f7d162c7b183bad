"""`trm-broker serve` with TRM_PROCESSES=2 on PostgreSQL (issue 21): two processes share the
port, each with its own database pool and background loops. Under load one is killed
(SIGKILL): the broker starts another, and every message the senders hold a receipt for is
delivered once and recorded once in the ledger. SIGTERM stops them all. On SQLite the
setting is refused, saying why."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.load import (
    FAST_DELIVERY,
    LoadGenerator,
    chaos_rng,
    check_delivery,
    ledger_acknowledgements,
    logs_hint,
    two_countries,
)
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


async def two_children(pid: int, without: int = 0, timeout: float = 60.0) -> set[int]:
    """The broker's two processes, once ``without`` (one killed) is gone from them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if len(found) == 2 and without not in found:
            return found
        await asyncio.sleep(0.2)
    return children(pid)


async def test_two_processes_serve_one_port_and_a_killed_one_is_replaced(
    tmp_path: Path, empty_postgres_database: str
) -> None:
    seed, rng = chaos_rng()
    started = time.monotonic()
    with LocalCluster(tmp_path, empty_postgres_database, dict(FAST_DELIVERY)) as cluster:
        cluster.migrate()
        cluster.init_operator()
        broker = cluster.start_broker(TRM_PROCESSES="2")
        first = await two_children(broker.popen.pid)
        assert len(first) == 2, f"processes under the broker: {first}"
        parties = await two_countries(cluster)
        auditor_key = demo.register_auditor(cluster, "at.rapporteur", "AT")
        load = LoadGenerator([broker.url], parties, rng, concurrency=8)
        stop = asyncio.Event()
        sending = asyncio.create_task(load.run(stop))
        try:
            await load.receipted_since(started)
            killed = min(first)
            os.kill(killed, signal.SIGKILL)
            replaced = await two_children(broker.popen.pid, without=killed)
            await load.receipted_since(time.monotonic())  # still flowing after the kill
        finally:
            stop.set()
            await sending
        report = await check_delivery(
            f"two processes, postgresql, seed {seed}",
            load,
            [p.node for p in parties],
            cluster.database_url,
            started,
        )
        expected = {s.message_id for s in load.receipted}
        accepted = await ledger_acknowledgements(
            broker.url, auditor_key, expected, event="message.accepted"
        )
        detail = f"{report.summary()}\n{logs_hint(cluster, not report.clean)}"
        assert killed not in replaced, (first, replaced, detail)
        assert len(replaced) == 2, (first, replaced, detail)
        broker.popen.send_signal(signal.SIGTERM)
        assert broker.popen.wait(timeout=60) == 0, detail
        assert children(broker.popen.pid) == set()
        assert all(not Path(f"/proc/{pid}").exists() for pid in replaced), replaced
    print(f"\n{report.summary()}")
    assert report.sent == report.receipted > 0, detail
    assert (report.lost, report.duplicated, report.unexpected) == (0, 0, 0), detail
    assert report.delivered == report.receipted, detail
    assert {i for i in expected if accepted[i] != 1} == set(), detail


def test_more_than_one_process_on_sqlite_is_refused_saying_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env.update(
        TRM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}",
        TRM_PROCESSES="2",
    )
    done = subprocess.run(
        [sys.executable, "-m", "trm_broker.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "TRM_PROCESSES" in done.stderr
    assert "PostgreSQL" in done.stderr
