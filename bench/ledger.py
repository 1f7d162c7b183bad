"""Ledger benchmarks (not tests): how soon an accepted message is in the tree, and what a
proof costs as the ledger grows. `make bench` runs the full size and checks the targets;
`make test` runs `--quick` only to keep this script working.

    python -m bench.ledger [--quick]        (on SQLite, the embedded default)

Targets (issue 4): an entry is integrated within 1 s of its transaction; an inclusion
proof reads O(log n) stored nodes whatever the ledger's size.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.support import broker_settings, referral, running_broker
from trm_broker.background.sequencer import LedgerSequencer
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.ledger import merkle
from trm_broker.logs import configure_logging
from trm_broker.store import ledger
from trm_broker.store.migrate import upgrade_async


async def integration_latency(database_url: str, workdir: Path, messages: int) -> list[float]:
    """Seconds from a 202 until `GET /v1/messages/{id}` shows the entry's index."""
    at, ng = KeySet.generate("at.focal-point"), KeySet.generate("ng.naptip")
    latencies = []
    async with running_broker(broker_settings(database_url, workdir)) as broker:
        await broker.register(at, "AT", inbox_url="https://node-at.example/inbox")
        await broker.register(ng, "NG", inbox_url="https://node-ng.example/inbox")
        for _ in range(messages):
            message_id = (await broker.submit(referral(at, ng))).json()["message_id"]
            accepted = time.perf_counter()
            while (await broker.status(message_id, at)).json()["ledger_index"] is None:
                await asyncio.sleep(0.005)
            latencies.append(time.perf_counter() - accepted)
    return latencies


async def proof_cost(
    database_url: str, workdir: Path, sizes: list[int]
) -> list[tuple[int, int, float]]:
    """(size, nodes read, seconds) for an inclusion proof of the middle entry at each size."""
    results = []
    async with running_broker(broker_settings(database_url, workdir), run_sequencer=False) as b:
        state = b.app.state.broker
        sequencer = LedgerSequencer(state.sessions, state.note_signer(), batch_size=5000)
        size = 0
        for target in sizes:
            async with state.sessions() as session:
                for number in range(size, target):
                    ledger.append(
                        session,
                        LedgerEvent(EventType.ALERT_RAISED, datetime.now(UTC), facts={"n": number}),
                    )
                await session.commit()
            while await sequencer.run_once():
                pass
            async with state.sessions() as session:
                latest = await ledger.latest_checkpoint(session)
                if latest is None:
                    raise RuntimeError("the sequencer signed no checkpoint")
                size = latest.size
                index = size // 2
                wanted = merkle.inclusion_nodes(index, size)
                started = time.perf_counter()
                nodes = await ledger.nodes(session, wanted)
                proof = merkle.inclusion_proof(index, size, nodes)
                elapsed = time.perf_counter() - started
                leaf = (await ledger.nodes(session, [(0, index)]))[(0, index)]
                merkle.verify_inclusion(leaf, index, size, proof, latest.root)
            results.append((size, len(wanted), elapsed))
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes; targets not checked")
    args = parser.parse_args()
    messages, sizes = (5, [100, 1_000]) if args.quick else (100, [1_000, 10_000, 100_000])
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        urls = [f"sqlite+aiosqlite:///{Path(tmp) / name}" for name in ("latency.db", "proofs.db")]
        for url in urls:
            await upgrade_async(url)
        latencies = await integration_latency(urls[0], Path(tmp), messages)
        costs = await proof_cost(urls[1], Path(tmp), sizes)
    p50 = statistics.median(latencies)
    worst = max(latencies)
    print(
        f"ledger integration after accept: p50 {p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms "
        f"over {len(latencies)} messages (target: max < 1000 ms)"
    )
    for size, reads, elapsed in costs:
        print(
            f"inclusion proof at size {size:>7}: {reads:>2} nodes read "
            f"(2·log2 n + 2 = {2 * math.log2(size) + 2:.0f}), {elapsed * 1000:.1f} ms"
        )
    if args.quick:
        return 0
    ok = worst < 1.0 and all(reads <= 2 * math.log2(size) + 2 for size, reads, _ in costs)
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
