"""Accepting envelopes: a valid one gets a verifiable receipt; every forgery is refused
with problem+json and leaves nothing stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.keys import KeySet, SigningKey, load_ed25519_public

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(
        broker_settings(database_url, tmp_path, max_envelope_bytes=64 * 1024)
    ) as b:
        assert (
            await b.register(AT, "AT", inbox_url="https://node-at.example/inbox")
        ).status_code == 201
        assert (
            await b.register(NG, "NG", inbox_url="https://node-ng.example/inbox")
        ).status_code == 201
        yield b


async def assert_refused(
    broker: Broker, response_status: int, status: int, slug: str, body: dict[str, object]
) -> None:
    assert response_status == status, body
    assert body["type"] == f"urn:trm-broker:problem:{slug}"
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert await broker.stored_counts() == (0, 0)


async def test_valid_envelope_gets_a_receipt_signed_by_the_broker(broker: Broker) -> None:
    envelope = referral(AT, NG)
    response = await broker.submit(envelope)
    assert response.status_code == 202, response.text
    body = response.json()

    published = (await broker.client.get("/v1/broker")).json()["signing_key"]
    parsed = jws.parse(body["receipt"], jws.TYP_RECEIPT)
    assert parsed.kid == published["kid"]
    jws.verify(parsed, load_ed25519_public(published["public"]))
    claims = parsed.claims()
    assert claims["message_id"] == body["message_id"]
    assert claims["envelope_digest"] == jws.digest(envelope)

    status = (await broker.status(body["message_id"], AT)).json()
    assert status["status"] == "accepted"
    assert status["delivery"]["status"] == "pending"
    assert await broker.stored_counts() == (1, 1)


async def test_resending_the_same_envelope_returns_the_original_receipt(broker: Broker) -> None:
    envelope = referral(AT, NG)
    first = await broker.submit(envelope)
    again = await broker.submit(envelope)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["receipt"] == first.json()["receipt"]
    assert await broker.stored_counts() == (1, 1)


async def test_same_id_with_other_content_is_refused(broker: Broker) -> None:
    first = referral(AT, NG, payload={"form_of_exploitation": "forced_labour"})
    message_id = json.loads(b64url_decode(first["payload"]))["id"]
    assert (await broker.submit(first)).status_code == 202
    other = referral(AT, NG, payload={"form_of_exploitation": "sexual"}, message_id=message_id)
    response = await broker.submit(other)
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert await broker.stored_counts() == (1, 1)


async def test_tampered_envelope_is_refused(broker: Broker) -> None:
    envelope = referral(AT, NG)
    claims = json.loads(b64url_decode(envelope["payload"]))
    claims["case_ref"] = "AT-2026-9999"
    tampered = {**envelope, "payload": b64url_encode(canonical_json(claims))}
    response = await broker.submit(tampered)
    assert response.headers["content-type"] == PROBLEM
    await assert_refused(broker, response.status_code, 401, "bad-signature", response.json())


async def test_unknown_sender_is_refused(broker: Broker) -> None:
    stranger = KeySet.generate("xx.stranger")
    response = await broker.submit(referral(stranger, NG))
    await assert_refused(broker, response.status_code, 403, "unknown-sender", response.json())


async def test_signature_by_another_key_under_the_senders_kid_is_refused(broker: Broker) -> None:
    attacker = SigningKey.generate()
    genuine = referral(AT, NG)
    signing_input = f"{genuine['protected']}.{genuine['payload']}".encode()
    forged = {**genuine, "signature": b64url_encode(attacker.sign(signing_input))}
    response = await broker.submit(forged)
    await assert_refused(broker, response.status_code, 401, "bad-signature", response.json())


async def test_registered_participant_cannot_send_in_anothers_name(broker: Broker) -> None:
    # NG signs with its own key an envelope that claims AT as sender.
    impostor = KeySet(participant=AT.participant, signing=NG.signing, encryption=AT.encryption)
    response = await broker.submit(
        referral(impostor, KeySet("ng.naptip", AT.signing, NG.encryption))
    )
    await assert_refused(broker, response.status_code, 403, "forbidden", response.json())


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256"])
async def test_other_algorithms_are_refused(broker: Broker, alg: str) -> None:
    genuine = referral(AT, NG)
    header = {"alg": alg, "kid": AT.signing.kid, "typ": jws.TYP_ENVELOPE}
    forged = {**genuine, "protected": b64url_encode(canonical_json(header))}
    if alg == "none":
        forged["signature"] = ""
    response = await broker.submit(forged)
    await assert_refused(broker, response.status_code, 400, "invalid-envelope", response.json())


async def test_envelope_outside_the_clock_skew_window_is_refused(broker: Broker) -> None:
    stale = referral(AT, NG, now=datetime.now(UTC) - timedelta(minutes=10))
    response = await broker.submit(stale)
    await assert_refused(broker, response.status_code, 400, "invalid-envelope", response.json())
    assert "created_at" in response.json()["detail"]


async def test_oversized_body_is_refused_before_parsing(broker: Broker) -> None:
    response = await broker.submit(b"{" * (64 * 1024 + 1))
    await assert_refused(broker, response.status_code, 413, "too-large", response.json())


async def test_payload_sealed_to_someone_else_is_refused(broker: Broker) -> None:
    wrong_recipient_key = KeySet(NG.participant, NG.signing, AT.encryption)
    response = await broker.submit(referral(AT, wrong_recipient_key))
    await assert_refused(broker, response.status_code, 400, "invalid-envelope", response.json())


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"protected": 1}',
        '{"a": "\xff"}'.encode("latin-1"),
        b'{"protected": ' + b"1" * 5000 + b"}",  # beyond Python's integer parsing limit
    ],
)
async def test_garbage_is_refused_with_a_problem(broker: Broker, body: bytes) -> None:
    response = await broker.submit(body)
    assert response.headers["content-type"] == PROBLEM
    await assert_refused(broker, response.status_code, 400, "invalid-envelope", response.json())


async def test_status_of_an_unknown_message_is_a_problem(broker: Broker) -> None:
    response = await broker.status("01a207c7-3c14-71cc-914e-abe9c663302d", AT)
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


async def test_the_same_envelope_sent_concurrently_is_stored_once_and_all_get_its_receipt(
    broker: Broker,
) -> None:
    envelope = referral(AT, NG)
    responses = await asyncio.gather(*(broker.submit(envelope) for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202]
    assert len({json.dumps(r.json()["receipt"], sort_keys=True) for r in responses}) == 1
    assert await broker.stored_counts() == (1, 1)


async def test_schema_errors_name_members_without_echoing_what_was_sent(broker: Broker) -> None:
    secret = "Jane Doe born 1990"
    claims = json.loads(b64url_decode(referral(AT, NG)["payload"]))
    claims[secret] = "x"  # an unknown member whose name is free text
    claims["sealed"]["suite"] = secret  # and free text in a clear field
    forged = jws.sign(claims, AT.signing, jws.TYP_ENVELOPE)
    response = await broker.submit(forged)
    await assert_refused(broker, response.status_code, 400, "invalid-envelope", response.json())
    assert secret not in response.text
    assert "(unknown member)" in response.json()["fields"]
    assert "sealed/suite" in response.json()["fields"]


async def test_a_streamed_body_without_length_is_cut_off_at_the_limit(broker: Broker) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024  # 100 KiB in all, over the 64 KiB limit, no Content-Length

    response = await broker.client.post(
        "/v1/messages", content=chunks(), headers={"content-type": "application/jose+json"}
    )
    assert "content-length" not in response.request.headers
    await assert_refused(broker, response.status_code, 413, "too-large", response.json())
