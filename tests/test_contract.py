"""The committed contract is what the code speaks."""

from __future__ import annotations

import json

from trm_broker.contract.schemas import CONTRACTS_DIR, render
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import MessageType
from trm_broker.domain.signed_objects import AckClaims, ReceiptClaims


def test_committed_contract_files_match_the_code() -> None:
    stale = [
        path
        for path, text in render().items()
        if not (CONTRACTS_DIR / path).exists()
        or (CONTRACTS_DIR / path).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run `trm-broker contract write` and commit contracts/"


def test_no_schema_is_left_behind_that_the_code_no_longer_writes() -> None:
    rendered = set(render())
    published = {
        str(path.relative_to(CONTRACTS_DIR))
        for folder in ("schemas", "openapi")
        for path in (CONTRACTS_DIR / folder).rglob("*.json")
    }
    assert published == rendered
    assert {p for p in rendered if p.startswith("schemas/ledger/")} == {
        f"schemas/ledger/{t.value}.v1.json" for t in EventType
    } | {"schemas/ledger/entry.v1.json"}


def test_the_broker_openapi_publishes_every_endpoint() -> None:
    paths = set(json.loads((CONTRACTS_DIR / "openapi/broker.json").read_text())["paths"])
    assert {
        "/v1/participants",
        "/v1/participants/{participant_id}/keys",
        "/v1/participants/{participant_id}/keys/{kid}/revoke",
        "/v1/messages",
        "/v1/messages/{message_id}",
        "/v1/broker",
        "/healthz",
        "/readyz",
    } <= paths
    node_paths = set(json.loads((CONTRACTS_DIR / "openapi/node.json").read_text())["paths"])
    per_type = {
        "referral",
        "referral-response",
        "risk-assessment",
        "return-preparation",
        "reception-confirmation",
        "monitoring",
        "closure",
        "consent-withdrawal",
    }
    assert {"/inbox", "/messages"} | {f"/cases/{{case_ref}}/{t}" for t in per_type} <= node_paths


def test_receipt_and_ack_claims_round_trip_through_their_schema_models() -> None:
    key = KeySet.generate("ng.naptip").signing
    receipt = ReceiptClaims(
        v=1,
        message_id="01a207c7-3c14-71cc-914e-abe9c663302d",
        envelope_digest="sha-256:" + "A" * 43,
        accepted_at="2026-11-23T09:40:27.293Z",
        ledger_index=None,
    )
    signed = jws.sign(receipt.model_dump(mode="json"), key, jws.TYP_RECEIPT)
    claims = jws.parse(signed, jws.TYP_RECEIPT).claims()
    assert ReceiptClaims.model_validate(claims) == receipt
    assert "ledger_index" in claims  # null, not omitted: the schema requires it
    assert AckClaims.model_json_schema()["properties"]["status"]["enum"] == [
        "received",
        "rejected",
    ]


def test_every_message_type_publishes_its_payload_schema() -> None:
    for message_type in MessageType:
        path = CONTRACTS_DIR / f"schemas/payloads/{message_type.value}.v1.json"
        schema = json.loads(path.read_text())
        assert schema["$id"] == f"urn:trm-broker:contract:v1:payload-{message_type.value}"
        assert schema["additionalProperties"] is False
