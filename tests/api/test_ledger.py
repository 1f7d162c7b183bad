"""The ledger over HTTP: every change is an entry, integrated within a second; checkpoints,
inclusion and consistency proofs verify; auditors read all entries, parties their own."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    OPERATOR_ID,
    PROBLEM,
    Broker,
    broker_settings,
    polling,
    referral,
    running_broker,
)
from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import sha256_digest
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.times import rfc3339
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint, NoteVerifier, open_checkpoint

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
FR = KeySet.generate("fr.focal-point")
AUDITOR = KeySet.generate("at.rapporteur")


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (FR, "FR", "focal_point"),
            (AUDITOR, "AT", "auditor"),
        ]:
            inbox = f"https://node-{country.lower()}.example/inbox"
            assert (
                await b.register(keyset, country, kind=kind, inbox_url=inbox)
            ).status_code == 201
        yield b


async def verifier(broker: Broker) -> NoteVerifier:
    ledger = (await broker.client.get("/v1/broker")).json()["ledger"]
    return NoteVerifier.from_vkey(ledger["verifier_key"])


async def checkpoint_of_size(broker: Broker, at_least: int) -> Checkpoint:
    """The latest checkpoint, once it covers ``at_least`` entries (the sequencer runs in the
    background and integrates within a second)."""
    key = await verifier(broker)
    async for _ in polling():
        response = await broker.client.get("/v1/ledger/checkpoint")
        assert response.status_code == 200, response.text
        checkpoint = open_checkpoint(response.text, key, origin=key.name)
        if checkpoint.size >= at_least:
            return checkpoint
    raise AssertionError(f"the ledger did not reach {at_least} entries")


async def all_entries(broker: Broker, reader: KeySet) -> list[dict[str, Any]]:
    page = (await broker.call("GET", "/v1/ledger/entries?limit=1000", reader)).json()
    entries: list[dict[str, Any]] = page["entries"]
    return entries


async def test_each_change_is_an_entry_and_the_checkpoint_commits_to_them(broker: Broker) -> None:
    envelope = referral(AT, NG)
    receipt = (await broker.submit(envelope)).json()["receipt"]
    # bootstrap, four registrations, the case's consent, one acceptance
    checkpoint = await checkpoint_of_size(broker, 7)
    entries = await all_entries(broker, AUDITOR)
    assert [e["index"] for e in entries] == list(range(checkpoint.size))
    assert [e["entry"]["type"] for e in entries] == [
        "operator.bootstrapped",
        *["participant.registered"] * 4,
        "consent.registered",
        "message.accepted",
    ]
    leaves = [merkle.leaf_hash(canonical_json(e["entry"])) for e in entries]
    assert [base64.b64decode(e["leaf_hash"]) for e in entries] == leaves
    assert merkle.root_of(leaves) == checkpoint.root

    accepted = entries[-1]["entry"]
    message_id = jws.parse(envelope, jws.TYP_ENVELOPE).claims()["id"]
    assert accepted["message_id"] == message_id
    assert accepted["envelope_digest"] == jws.digest(envelope)
    assert accepted["parties"] == [AT.participant, NG.participant]
    assert accepted["countries"] == ["AT", "NG"]
    # The receipt names the entry by its digest, and the status then shows its index.
    receipt_claims = jws.parse(receipt, jws.TYP_RECEIPT).claims()
    assert receipt_claims["ledger_entry"] == sha256_digest(canonical_json(accepted))
    status = (await broker.status(message_id, AT)).json()
    assert status["ledger_index"] == entries[-1]["index"]


async def test_entries_hold_metadata_and_digests_only(broker: Broker) -> None:
    secret = "Jane Doe, born 1990 in Benin City"
    await broker.submit(referral(AT, NG, payload={"identification_summary": secret}))
    await checkpoint_of_size(broker, 6)
    text = str(await all_entries(broker, AUDITOR))
    for word in ("Jane", "Benin", "sealed", "payload"):
        assert word not in text


async def test_inclusion_and_consistency_proofs_verify_against_signed_checkpoints(
    broker: Broker,
) -> None:
    first = await checkpoint_of_size(broker, 5)
    await broker.submit(referral(AT, NG))
    await broker.submit(referral(NG, AT, case_ref="NG-2026-0002", destination_country="AT"))
    second = await checkpoint_of_size(broker, first.size + 4)  # two consents, two messages

    for index in range(second.size):
        proof = (await broker.call("GET", f"/v1/ledger/entries/{index}", AUDITOR)).json()
        assert proof["tree_size"] == second.size
        leaf = merkle.leaf_hash(canonical_json(proof["entry"]))
        path = [base64.b64decode(h) for h in proof["inclusion_proof"]]
        merkle.verify_inclusion(leaf, index, second.size, path, second.root)
        assert proof["checkpoint"] is not None  # the broker keeps every checkpoint it issued

    old = (await broker.call("GET", f"/v1/ledger/entries/0?tree_size={first.size}", AUDITOR)).json()
    merkle.verify_inclusion(
        merkle.leaf_hash(canonical_json(old["entry"])),
        0,
        first.size,
        [base64.b64decode(h) for h in old["inclusion_proof"]],
        first.root,
    )
    response = await broker.client.get(
        f"/v1/ledger/consistency?first={first.size}&second={second.size}"
    )
    proof = [base64.b64decode(h) for h in response.json()["proof"]]
    merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
    past = (await broker.client.get(f"/v1/ledger/checkpoint?size={first.size}")).text
    assert open_checkpoint(past, await verifier(broker)) == first


async def test_parties_read_their_own_entries_and_others_nothing(broker: Broker) -> None:
    await broker.submit(referral(AT, NG))
    checkpoint = await checkpoint_of_size(broker, 7)
    everything = await all_entries(broker, AUDITOR)
    assert len(everything) == checkpoint.size

    own = await all_entries(broker, FR)
    assert [e["entry"]["type"] for e in own] == ["participant.registered"]  # its own only
    accepted = everything[-1]["index"]
    for reader, expected in [(AT, 200), (NG, 200), (FR, 404), (AUDITOR, 200)]:
        response = await broker.call("GET", f"/v1/ledger/entries/{accepted}", reader)
        assert response.status_code == expected, (reader.participant, response.text)

    operator = await broker.call("GET", "/v1/ledger/entries", broker.operator)
    assert operator.status_code == 403
    unsigned = await broker.client.get("/v1/ledger/entries")
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"] == PROBLEM


async def test_search_by_case_participant_country_type_and_time_as_json_and_csv(
    broker: Broker,
) -> None:
    await broker.submit(referral(AT, NG, case_ref="AT-2026-0001"))
    await broker.submit(referral(AT, NG, case_ref="AT-2026-0002"))
    await checkpoint_of_size(broker, 9)

    async def search(query: str, reader: KeySet = AUDITOR) -> list[dict[str, Any]]:
        response = await broker.call("GET", f"/v1/ledger/search?{query}", reader)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["entries"]
        return found

    by_case = await search("case_ref=AT-2026-0002")
    assert [e["entry"]["type"] for e in by_case] == ["consent.registered", "message.accepted"]
    assert {e["entry"]["case_ref"] for e in by_case} == {"AT-2026-0002"}
    assert len(await search("type=message.accepted")) == 2
    assert len(await search("participant=ng.naptip")) == 3  # its registration, two messages
    assert len(await search("country=FR")) == 1
    assert await search("case_ref=AT-2026-0002", reader=FR) == []  # not party to it
    soon = rfc3339(datetime.now(UTC) + timedelta(hours=1), timespec="auto")
    assert await search(f"type=message.accepted&since={soon}") == []
    page = await search("limit=2")
    rest = await search(f"after={page[-1]['index']}&limit=1000")
    assert [e["index"] for e in page + rest] == list(range(9))

    response = await broker.call(
        "GET", "/v1/ledger/search?type=message.accepted&format=csv", AUDITOR
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["case_ref"] for r in rows] == ["AT-2026-0001", "AT-2026-0002"]
    assert rows[0]["parties"] == "at.focal-point ng.naptip"


@pytest.mark.parametrize(
    "query",
    ["since=2026-11-23T10:00:00", "type=made.up", "country=Nigeria", "limit=5000", "after=-2"],
)
async def test_bad_search_parameters_are_problems(broker: Broker, query: str) -> None:
    response = await broker.call("GET", f"/v1/ledger/search?{query}", AUDITOR)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


async def test_registry_changes_are_entries_naming_the_operator_and_the_proof(
    broker: Broker,
) -> None:
    revoke = f"/v1/participants/{FR.participant}/keys/{FR.signing.kid}/revoke"
    assert (await broker.call("POST", revoke, broker.operator)).status_code == 200
    checkpoint = await checkpoint_of_size(broker, 6)
    revoked = (await all_entries(broker, AUDITOR))[checkpoint.size - 1]["entry"]
    assert revoked["type"] == "key.revoked"
    assert (revoked["participant"], revoked["kid"]) == (FR.participant, FR.signing.kid)
    assert revoked["operator"] == OPERATOR_ID
    assert revoked["proof_digest"].startswith("sha-256:")


async def test_auditors_read_the_whole_ledger_as_stored_a_page_at_a_time(broker: Broker) -> None:
    """`GET /v1/ledger/entries/raw`: indexes, the tree's leaves, then each entry's stored
    bytes (its RFC 8785 JSON) and a line feed; what `trm-broker ledger verify` reads."""
    await broker.submit(referral(AT, NG))
    checkpoint = await checkpoint_of_size(broker, 7)
    everything = await all_entries(broker, AUDITOR)
    response = await broker.call("GET", "/v1/ledger/entries/raw?start=2&limit=4", AUDITOR)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["trm-ledger-count"] == "4"
    assert response.headers["trm-ledger-tree-size"] == str(checkpoint.size)
    data = response.content
    assert [int.from_bytes(data[i : i + 8], "big") for i in range(0, 32, 8)] == [2, 3, 4, 5]
    leaves = [data[32 + i : 64 + i] for i in range(0, 128, 32)]
    bodies = data[160:].split(b"\n")
    assert bodies.pop() == b""
    assert bodies == [canonical_json(e["entry"]) for e in everything[2:6]]
    assert leaves == [base64.b64decode(e["leaf_hash"]) for e in everything[2:6]]
    assert leaves == [merkle.leaf_hash(body) for body in bodies]

    beyond = await broker.call("GET", f"/v1/ledger/entries/raw?start={10**6}", AUDITOR)
    assert beyond.status_code == 200
    assert (beyond.headers["trm-ledger-count"], beyond.content) == ("0", b"")
    for reader in (AT, broker.operator):
        refused = await broker.call("GET", "/v1/ledger/entries/raw", reader)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == PROBLEM
