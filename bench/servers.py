"""The processes the benches measure: a broker started as the README says (`trm-broker
serve`, its settings from TRM_ variables, rate limits off), on a fresh PostgreSQL database or
a new SQLite file; a recipient's node; the trivial baseline server (bench/trivial.py)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from bench import bulk
from trm_broker.crypto.keys import KeySet
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Process, _wait_healthy, free_port
from trm_broker.settings import Settings
from trm_broker.web.signed_requests import SignedRequests

POSTGRES = os.environ.get(
    "TRM_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
#: Not the ids bench/console.py loads (its focal points are `<country>.focal-point`).
SENDER, RECIPIENT = "at.bench-sender", "ng.bench-recipient"


def _defaults() -> dict[str, str]:
    """The broker's own defaults for what LocalCluster shortens for tests, and no rate limits
    (a bench measures capacity, not the limiter)."""
    fields = Settings.model_fields
    return {
        "TRM_DELIVERY_POLL_SECONDS": str(fields["delivery_poll_seconds"].default),
        "TRM_DELIVERY_BACKOFF_MAX_SECONDS": str(fields["delivery_backoff_max_seconds"].default),
        "TRM_RATE_PER_SECOND": "0",
        "TRM_ADDRESS_RATE_PER_SECOND": "0",
        "TRM_LOG_LEVEL": "warning",
    }


async def _database(name: str, make: bool) -> str:
    admin = POSTGRES.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if make:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return POSTGRES.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str | None]:
    """A fresh PostgreSQL database (dropped after), or None: the cluster's own SQLite file."""
    if backend == "sqlite":
        yield None
        return
    name = f"trm_bench_{secrets.token_hex(4)}"
    url = asyncio.run(_database(name, make=True))
    try:
        yield url
    finally:
        asyncio.run(_database(name, make=False))


def register(cluster: LocalCluster, keyset: KeySet, country: str, inbox: str | None) -> None:
    """A focal point registered by the operator (``inbox``: its node's push inbox)."""
    if cluster.broker is None or cluster.operator is None:
        raise RuntimeError("start the broker and init the operator first")
    body: dict[str, object] = {
        "id": keyset.participant,
        "kind": "focal_point",
        "country": country,
        "keys": keyset.public(),
        "statements": demo.stated(cluster.operator, keyset),
    }
    if inbox:
        body["inbox_url"] = inbox
    response = httpx.post(
        cluster.broker.url + "/v1/participants",
        json=body,
        auth=SignedRequests(cluster.operator.signing),
        timeout=30,
    )
    response.raise_for_status()


@contextmanager
def broker(
    backend: str,
    workdir: Path,
    *,
    with_node: bool = False,
    preload: int = 0,
    processes: int = 1,
) -> Iterator[tuple[LocalCluster, KeySet, KeySet]]:
    """A broker (and, ``with_node``, the recipient's node process, registered with its
    inbox); the sender's and the recipient's key sets. ``preload``: ledger entries
    bulk-loaded before the broker starts; ``processes``: TRM_PROCESSES."""
    env = {**_defaults(), "TRM_PROCESSES": str(processes)}
    with database(backend, workdir) as url, LocalCluster(workdir, url, env) as cluster:
        cluster.migrate()
        if preload:
            asyncio.run(bulk.load(cluster.database_url, preload))
        cluster.init_operator()
        cluster.start_broker()
        sender = KeySet.generate(SENDER)
        if with_node:
            node = cluster.start_node("node-ng", [RECIPIENT])
            recipient = node.keysets[0]
            register(cluster, recipient, "NG", node.inbox_url)
        else:
            recipient = KeySet.generate(RECIPIENT)
            register(cluster, recipient, "NG", None)
        register(cluster, sender, "AT", None)
        yield cluster, sender, recipient


@contextmanager
def trivial(workdir: Path) -> Iterator[Process]:
    """The baseline server (bench/trivial.py) on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env.update(TRM_HOST="127.0.0.1", TRM_PORT=str(port), TRM_LOG_LEVEL="warning")
    log_path = workdir / "trivial.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.trivial"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )
    process = Process("trivial", f"http://127.0.0.1:{port}", popen, log_path)
    try:
        _wait_healthy(process)
        yield process
    finally:
        process.stop()
