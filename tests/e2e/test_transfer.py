"""The demo's transfer with real processes, on SQLite and PostgreSQL: the destination
opens exactly what was sent, and the broker's database and every log hold none of it."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from trm_broker.crypto.encoding import b64url_decode
from trm_broker.dev import demo, demo_case
from trm_broker.dev.cluster import LocalCluster
from trm_broker.store.database import create_engine
from trm_broker.store.models import Message

pytestmark = pytest.mark.e2e


def canary_payload() -> tuple[dict[str, object], list[str]]:
    canaries = [f"CANARY{secrets.token_hex(8).upper()}" for _ in range(4)]
    payload: dict[str, object] = {
        "destination_country": "NG",
        "identification_summary": canaries[0],
        "person": {"given_name": canaries[1], "family_name": canaries[2]},
        "form_of_exploitation": "forced_labour",
        "immediate_needs": ["shelter"],
        "notes": canaries[3],
        "languages": ["en"],
        "interpreter_needed": False,
        "is_child": False,
    }
    return payload, canaries


def broker_database_bytes(cluster: LocalCluster) -> bytes:
    url = make_url(cluster.database_url)
    if url.get_backend_name() == "sqlite":
        files = [Path(str(url.database) + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed to inspect the PostgreSQL database"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run([pg_dump, "--dbname", dsn], capture_output=True, check=True).stdout


def decoded_envelopes(cluster: LocalCluster) -> bytes:
    """Every stored envelope's signed claims and receipt, decoded from base64url (a raw dump
    shows them encoded, or as hex on PostgreSQL, where a leak would hide from a byte search)."""

    async def read() -> list[tuple[bytes, str]]:
        engine = create_engine(cluster.database_url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(select(Message.envelope, Message.receipt))
                return [(bytes(env or b""), receipt) for env, receipt in rows.all()]
        finally:
            await engine.dispose()

    decoded = b""
    for envelope, receipt in asyncio.run(read()):
        if envelope:  # purged (retention, consent withdrawal): the receipt stays
            decoded += b64url_decode(json.loads(envelope)["payload"]) + envelope
        decoded += b64url_decode(json.loads(receipt)["payload"])
    return decoded


def test_referral_travels_sealed_end_to_end(tmp_path: Path, broker_database: str | None) -> None:
    payload, canaries = canary_payload()
    with LocalCluster(tmp_path, broker_database_url=broker_database) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [demo_case.SENDER])
        ng = cluster.start_node("node-ng", [demo_case.RECIPIENT])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG")

        sent = demo.send_referral(at, "AT-2026-E2E-0001", payload)
        status = demo.wait_acknowledged(cluster, sent["message_id"], at)
        received = demo.wait_received(ng, sent["message_id"])

        assert status["delivery"]["attempts"] == 1
        assert received["payload"] == payload
        assert (received["sender"], received["case_ref"]) == (demo_case.SENDER, "AT-2026-E2E-0001")

        stored = broker_database_bytes(cluster) + decoded_envelopes(cluster)
        assert sent["message_id"].encode() in stored  # we are looking at the right database
        assert b'"destination_country":"NG"' in stored  # the signed claims, decoded
        cluster.stop()
        logs = "".join(p.log_text() for p in cluster.processes)
    assert "message_received" in logs
    assert "delivery_acknowledged" in logs
    for canary in canaries:
        assert canary.encode() not in stored, "plaintext payload found in the broker's database"
        assert canary not in logs, "plaintext payload found in a log"


def test_demo_command_runs_and_exits_zero() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "trm-broker"), "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "the referral opened in Nigeria is exactly what Austria sent" in result.stdout
    assert result.stdout.count("refused:") == 2
    assert "stage closed" in result.stdout
    assert "ledger verify" in result.stdout
    # How to see the case in a browser: the command, and the users to sign in as.
    assert "make demo SERVE=1" in result.stdout
    assert "case-worker@at.focal-point" in result.stdout
