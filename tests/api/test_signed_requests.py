"""Every non-public call is signed (RFC 9421); each way around it is refused, nothing is
stored, and callers read only what they are party to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker
from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import KeySet, SigningKey

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
FR = KeySet.generate("fr.focal-point")  # registered, but party to nothing below
RAPPORTEUR = KeySet.generate("at.rapporteur")
URL = "http://broker/v1/messages"


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (FR, "FR", "focal_point"),
            (RAPPORTEUR, "AT", "auditor"),
        ]:
            inbox = f"https://node-{country.lower()}.example/inbox"
            response = await b.register(keyset, country, kind=kind, inbox_url=inbox)
            assert response.status_code == 201, response.text
        yield b


def envelope_bytes(envelope: dict[str, str]) -> bytes:
    return json.dumps(envelope).encode()


async def post_raw(broker: Broker, headers: dict[str, str], body: bytes) -> httpx.Response:
    return await broker.client.post(
        "/v1/messages", content=body, headers={**headers, "content-type": "application/jose+json"}
    )


def assert_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == f"urn:trm-broker:problem:{slug}"


async def test_an_unsigned_submission_is_refused_and_nothing_stored(broker: Broker) -> None:
    response = await broker.submit(referral(AT, NG), signer=None)
    assert_problem(response, 401, "unauthenticated")
    assert "RFC 9421" in response.json()["detail"]
    assert await broker.stored_counts() == (0, 0)


async def test_a_request_signed_by_someone_other_than_the_sender_is_refused(
    broker: Broker,
) -> None:
    # FR relays AT's genuinely signed envelope: the envelope verifies, the caller is wrong.
    response = await broker.submit(referral(AT, NG), signer=FR)
    assert_problem(response, 403, "forbidden")
    assert await broker.stored_counts() == (0, 0)


async def test_an_unknown_key_is_refused_without_echoing_its_id(broker: Broker) -> None:
    stranger = SigningKey.generate()
    response = await broker.submit(referral(AT, NG), signer=stranger)
    assert_problem(response, 401, "unauthenticated")
    assert stranger.kid not in response.text
    assert await broker.stored_counts() == (0, 0)


async def test_a_revoked_key_is_refused_by_name(broker: Broker) -> None:
    path = f"/v1/participants/{AT.participant}/keys/{AT.signing.kid}/revoke"
    assert (await broker.call("POST", path, broker.operator)).status_code == 200
    response = await broker.status("01a207c7-3c14-71cc-914e-abe9c663302d", AT)
    assert_problem(response, 401, "key-not-usable")
    assert response.json()["kid"] == AT.signing.kid


@pytest.mark.parametrize(
    ("part", "method", "path", "body"),
    [
        ("path", "POST", "/v1/participants", None),
        ("query", "POST", "/v1/messages?x=1", None),
        ("body", "POST", "/v1/messages", b"{}"),
    ],
)
async def test_a_signed_request_changed_in_transit_is_refused(
    broker: Broker, part: str, method: str, path: str, body: bytes | None
) -> None:
    envelope = envelope_bytes(referral(AT, NG))
    headers = sign_request("POST", URL, envelope, AT.signing)
    response = await broker.client.request(
        method,
        path,
        content=body if body is not None else envelope,
        headers={**headers, "content-type": "application/json"},
    )
    assert_problem(response, 401, "bad-signature")
    assert await broker.stored_counts() == (0, 0)


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
async def test_a_stale_or_future_signature_is_refused(broker: Broker, offset: timedelta) -> None:
    envelope = envelope_bytes(referral(AT, NG))
    created = datetime.now(UTC) + offset
    response = await post_raw(
        broker, sign_request("POST", URL, envelope, AT.signing, created=created), envelope
    )
    assert_problem(response, 401, "bad-signature")
    assert await broker.stored_counts() == (0, 0)


async def test_a_replayed_request_is_refused_even_concurrently(broker: Broker) -> None:
    signed = referral(AT, NG)
    await broker._consent_for(signed)
    envelope = envelope_bytes(signed)
    headers = sign_request("POST", URL, envelope, AT.signing)
    responses = await asyncio.gather(*(post_raw(broker, headers, envelope) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [202, 401, 401, 401]
    for refused in (r for r in responses if r.status_code == 401):
        assert_problem(refused, 401, "replayed-request")
    assert await broker.stored_counts() == (1, 1)


async def test_the_envelope_may_be_resent_in_a_newly_signed_request(broker: Broker) -> None:
    envelope = referral(AT, NG)
    first = await broker.submit(envelope)
    again = await broker.submit(envelope)  # a fresh signature and nonce: a legitimate retry
    assert (first.status_code, again.status_code) == (202, 200)


# Who may read a message's state: its sender and recipient only. Everyone else gets the
# same 404 as for an id that does not exist, so ids cannot be probed.
READERS = {
    "sender": (AT, 200),
    "recipient": (NG, 200),
    "other focal point": (FR, 404),
    "auditor": (RAPPORTEUR, 404),
    "operator": (None, 404),
}


@pytest.mark.parametrize("reader", sorted(READERS))
async def test_message_state_is_readable_by_its_parties_only(broker: Broker, reader: str) -> None:
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    keyset, expected = READERS[reader]
    response = await broker.status(message_id, keyset or broker.operator)
    assert response.status_code == expected, response.text
    if expected == 404:
        assert_problem(response, 404, "not-found")
        unknown = await broker.status(
            "01a207c7-3c14-71cc-914e-abe9c663302d", keyset or broker.operator
        )
        # Indistinguishable from an id that does not exist (but for the echoed path).
        assert {**unknown.json(), "instance": None} == {**response.json(), "instance": None}
    else:
        assert response.json()["message_id"] == message_id


async def test_reading_a_message_state_needs_a_signature(broker: Broker) -> None:
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    assert_problem(await broker.status(message_id, None), 401, "unauthenticated")


async def test_public_endpoints_need_no_signature(broker: Broker) -> None:
    for path in ("/healthz", "/readyz", "/v1/broker", "/v1/participants"):
        assert (await broker.client.get(path)).status_code == 200, path


async def test_an_old_envelope_cannot_probe_whether_someone_elses_message_id_exists(
    broker: Broker,
) -> None:
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    stale = datetime.now(UTC) - timedelta(hours=1)
    probe = await broker.submit(referral(FR, NG, message_id=message_id, now=stale))
    unused = await broker.submit(
        referral(FR, NG, message_id="01a207c7-3c14-71cc-914e-abe9c663302d", now=stale)
    )
    assert (probe.status_code, unused.status_code) == (400, 400)
    assert probe.json()["detail"] == unused.json()["detail"]
    assert await broker.stored_counts() == (1, 1)


async def test_a_percent_encoded_target_verifies_as_sent(broker: Broker) -> None:
    """The signature covers the target URI as sent, percent-encoding included: the broker
    compares the raw path, not a decoded and re-encoded one. (Found by the API fuzzing:
    such requests were refused as bad signatures, hiding the real answer.)"""
    for path, status in (
        ("/v1/consents/%C3%A9t%C3%A9", 400),  # no consent id: the schema says what to fix
        ("/v1/consents/a%20b", 400),
        ("/v1/consents/%7Eabc", 400),
        ("/v1/cases/AT-%41BC?x=%2F", 404),  # AT-ABC, not party to it
    ):
        response = await broker.call("GET", path, AT)
        assert response.status_code == status, (path, response.text)
    # The same request re-encoded in transit (%41 -> A) is not what was signed.
    headers = sign_request("GET", "http://broker/v1/cases/AT-%41BC", b"", AT.signing)
    altered = await broker.client.get("/v1/cases/AT-ABC", headers=headers)
    assert_problem(altered, 401, "bad-signature")


async def test_a_refused_or_repeated_submission_cannot_be_replayed_either(broker: Broker) -> None:
    """The accept path spends the nonce in the message's own transaction (issue 21): a
    request answered otherwise (a refusal, a repeat's 200) has its nonce spent on its own."""
    refused = referral(AT, NG, consent_ref=None)  # no consent: 403, nothing stored
    body = envelope_bytes(refused)
    headers = sign_request("POST", URL, body, AT.signing)
    assert (await post_raw(broker, headers, body)).status_code == 403
    assert_problem(await post_raw(broker, headers, body), 401, "replayed-request")

    accepted = referral(AT, NG)
    await broker._consent_for(accepted)
    assert (await broker.submit(accepted)).status_code == 202
    body = envelope_bytes(accepted)
    headers = sign_request("POST", URL, body, AT.signing)
    assert (await post_raw(broker, headers, body)).status_code == 200  # a repeat
    assert_problem(await post_raw(broker, headers, body), 401, "replayed-request")
    assert await broker.stored_counts() == (1, 1)


async def test_a_consent_registration_cannot_be_replayed(broker: Broker) -> None:
    url = "http://broker/v1/consents"
    body = json.dumps(
        {
            "id": "consent-replayed",
            "case_ref": "AT-replayed",
            "given_by": "person",
            "purposes": ["referral"],
            "recipients": [NG.participant],
            "data_categories": ["identity"],
            "valid_from": datetime.now(UTC).isoformat(),
            "form_digest": "sha-256:" + "A" * 43,
        }
    ).encode()
    for signer, first in [(RAPPORTEUR, 403), (AT, 201)]:
        headers = {
            **sign_request("POST", url, body, signer.signing),
            "content-type": "application/json",
        }
        assert (
            await broker.client.post("/v1/consents", content=body, headers=headers)
        ).status_code == first
        again = await broker.client.post("/v1/consents", content=body, headers=headers)
        assert_problem(again, 401, "replayed-request")
