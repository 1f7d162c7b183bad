"""Signatures and replay (issue 8): every way to forge, alter or replay a signed request, a
signed envelope, a sealed payload or a signed acknowledgement is refused with its problem
type, and nothing is stored.

This module lists every attack in one place. Those already proven elsewhere are referenced
(paths under tests/, test names shortened); the others (**here**) are below.

=================================================  ===============================================
attack                                             covered in
=================================================  ===============================================
**HTTP message signatures (RFC 9421), at the broker**
no signature at all                                api/test_signed_requests.py (an unsigned …)
a registered key that is not the envelope's        api/test_signed_requests.py (… someone other
sender                                             than the sender …)
unknown key (its id never echoed)                  api/test_signed_requests.py (an unknown key …)
revoked key (refused by name)                      api/test_signed_requests.py (a revoked key …),
                                                   api/test_key_lifecycle.py (… revoked at once)
expired key, after a rotation's overlap            api/test_key_lifecycle.py (after the overlap …)
@target-uri path or query changed; body changed    api/test_signed_requests.py (… changed in
without its digest                                 transit: path, query, body)
``created`` 6 minutes old or ahead                 api/test_signed_requests.py (a stale or future …)
a nonce replayed concurrently (a submission)       api/test_signed_requests.py (… concurrently)
@method, host, scheme changed; content-digest      **here**: test_a_request_changed_in_transit…
swapped, removed or doubled; Signature removed
another key's signature under a registered keyid;  **here**: test_a_signature_by_another_key…,
a keyid naming an encryption key                   test_a_keyid_naming_an_encryption_key…
no nonce/created/tag/alg/keyid, expires added,     **here**: test_signature_parameters…;
another tag/alg/label, a short nonce,              the verifier alone:
content-digest or @target-uri not covered          crypto/test_http_signatures.py
replayed one after the other: a submission, a      **here**: test_a_replayed_…,
read, an operator's registry change; a nonce       test_a_nonce_is_spent_…,
reused in a new request; a consent registration    test_a_consent_registration_replayed…
replayed concurrently
the window's edges (±1 s), each covered part, a    crypto/test_http_signatures.py
flipped signature bit
**Signed envelopes (JWS, RFC 7515), at the broker**
``alg`` none, HS256, ES256                         api/test_messages.py (other algorithms …)
``alg`` RS256, near misses of EdDSA; HS256 keyed   **here**: test_an_envelope_with_another_alg…
with the sender's public key (alg confusion)
an embedded key (``jwk``, ``jku``, ``x5c``,        **here**: test_an_embedded_key_is_never…
``x5u``)
a receipt or an acknowledgement posted as an       **here**: test_another_kind_of_signed_object…
envelope
another key's signature under the sender's kid;    api/test_messages.py (… another key …,
claims altered; sent in another's name; a stale    tampered …, … in another's name, … clock
``created_at``                                     skew …)
``crit``, wrong ``typ``, no ``kid``, unprotected   crypto/test_jws.py
header, flipped bits, a non-canonical payload
**Sealed payloads (HPKE, RFC 9180)**
a ciphertext moved into another envelope: each     crypto/test_seal.py (… moved into another
bound field; another recipient with the same key   envelope …, each binding field …)
a ciphertext moved to another recipient            **here**: test_a_ciphertext_moved_to…
a ciphertext moved into another envelope to the    **here**: test_a_ciphertext_moved_into…
same recipient (the broker cannot see it; the
node refuses it)
a payload sealed to someone else's key             api/test_messages.py (… sealed to someone else)
**Acknowledgements (JWS ``trm-ack+jws``)**
pull inbox: the sender's key, another digest, an   api/test_inbox.py (an ack that does not
unknown status, not a JWS                          verify …)
pull inbox: ``alg`` none (signed or not), HS256    **here**: test_a_forged_acknowledgement…
keyed with the public key, the receipt or the
envelope as an ack, another key under the
recipient's kid, an embedded ``jwk``, a revoked
key of the recipient
push: a stranger's or the sender's key, another    delivery/test_dispatcher.py (anything but a
digest, a rejection without reasons …              valid ack …)
push: an ack with ``alg`` none                     **here**: test_a_pushed_ack_with_alg_none…
**The node's inbox: pushes and receipts**
a push unsigned, or signed by the sender or a      node/test_inbox.py
stranger; replayed, altered or re-targeted; no
receipt, or one for another envelope or by
another key
**The published test vectors**: every verdict      test_vectors.py
=================================================  ===============================================
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.world import fingerprint
from tests.support import PROBLEM, Broker, broker_settings, referral, running_broker, running_node
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.http_signatures import new_nonce, sign_request
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
FR = KeySet.generate("fr.focal-point")
DE = KeySet.generate("de.focal-point")
ATTACKER = SigningKey.generate()  # never registered
NG_INBOX = "http://127.0.0.1:9/ng"  # a mock transport answers for it below
URL = "http://broker/v1/messages"

Headers = list[tuple[str, str]]


async def _broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as broker:
        for keyset, country, inbox in [
            (AT, "AT", None),
            (NG, "NG", NG_INBOX),
            (FR, "FR", None),
            (DE, "DE", None),
        ]:
            response = await broker.register(keyset, country, inbox_url=inbox)
            assert response.status_code == 201, response.text
        yield broker


@pytest.fixture
async def broker(sqlite_database: str, tmp_path: Path) -> AsyncIterator[Broker]:
    """Signature checks do not depend on the database: SQLite only."""
    async for running in _broker(sqlite_database, tmp_path):
        yield running


@pytest.fixture
async def any_broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    """Replay protection is the database's nonce store: both backends."""
    async for running in _broker(database_url, tmp_path):
        yield running


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:trm-broker:problem:{slug}", body
    return body


async def refused_and_nothing_stored(
    broker: Broker, attempt: Callable[[], Awaitable[httpx.Response]], status: int, slug: str
) -> dict[str, Any]:
    """Run ``attempt`` (returning a response); assert the refusal and that nothing changed."""
    before = await fingerprint(broker)
    body = assert_problem(await attempt(), status, slug)
    assert await fingerprint(broker) == before
    return body


async def consented_referral(broker: Broker, sender: KeySet = AT) -> dict[str, str]:
    """A referral whose consent is registered: valid, were it sent in a valid request."""
    signed = referral(sender, NG, destination_country="NG")
    await broker._consent_for(signed)
    return signed


def as_body(signed: dict[str, str]) -> bytes:
    return json.dumps(signed).encode()


async def post(
    broker: Broker, headers: Headers, body: bytes, path: str = "/v1/messages"
) -> httpx.Response:
    lines = [*headers, ("content-type", "application/jose+json")]
    return await broker.client.post(path, content=body, headers=lines)


def replace(headers: dict[str, str], name: str, value: str | None) -> Headers:
    lines = [(n, v) for n, v in headers.items() if n.lower() != name.lower()]
    return lines if value is None else [*lines, (name, value)]


def digest_of(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


# --- the request's signature ----------------------------------------------------------------

TAMPERINGS: dict[str, Callable[[bytes, bytes], tuple[Headers, bytes]]] = {
    # Signed as PUT, sent as POST.
    "@method": lambda body, other: (list(sign_request("PUT", URL, body, AT.signing).items()), body),
    # Signed for another host, or for https: the broker's own URL is what it verifies.
    "@target-uri host": lambda body, other: (
        list(sign_request("POST", "http://evil.example/v1/messages", body, AT.signing).items()),
        body,
    ),
    "@target-uri scheme": lambda body, other: (
        list(sign_request("POST", "https://broker/v1/messages", body, AT.signing).items()),
        body,
    ),
    # Another body with its own, correct digest: the signature covered the first digest.
    "content-digest swapped with the body": lambda body, other: (
        replace(sign_request("POST", URL, body, AT.signing), "Content-Digest", digest_of(other)),
        other,
    ),
    "content-digest removed": lambda body, other: (
        replace(sign_request("POST", URL, body, AT.signing), "Content-Digest", None),
        body,
    ),
    "content-digest doubled": lambda body, other: (
        [
            *sign_request("POST", URL, body, AT.signing).items(),
            ("Content-Digest", digest_of(other)),
        ],
        body,
    ),
    "Signature removed": lambda body, other: (
        replace(sign_request("POST", URL, body, AT.signing), "Signature", None),
        body,
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
async def test_a_request_changed_in_transit_is_refused(broker: Broker, tampering: str) -> None:
    body = as_body(await consented_referral(broker))
    other = as_body(await consented_referral(broker))
    headers, sent = TAMPERINGS[tampering](body, other)
    await refused_and_nothing_stored(
        broker, lambda: post(broker, headers, sent), 401, "bad-signature"
    )
    # The same envelope in a properly signed request goes through: only the tampering failed.
    genuine = list(sign_request("POST", URL, sent, AT.signing).items())
    assert (await post(broker, genuine, sent)).status_code == 202


async def test_a_signature_by_another_key_under_a_registered_keyid_is_refused(
    broker: Broker,
) -> None:
    body = as_body(await consented_referral(broker))
    forged = sign_request("POST", URL, body, ATTACKER)
    forged["Signature-Input"] = forged["Signature-Input"].replace(ATTACKER.kid, AT.signing.kid)
    problem = await refused_and_nothing_stored(
        broker, lambda: post(broker, list(forged.items()), body), 401, "bad-signature"
    )
    assert problem["kid"] == AT.signing.kid


async def test_a_keyid_naming_an_encryption_key_is_refused(broker: Broker) -> None:
    body = as_body(await consented_referral(broker))
    headers = sign_request("POST", URL, body, AT.signing)
    headers["Signature-Input"] = headers["Signature-Input"].replace(
        AT.signing.kid, AT.encryption.kid
    )
    problem = await refused_and_nothing_stored(
        broker, lambda: post(broker, list(headers.items()), body), 401, "unauthenticated"
    )
    assert AT.encryption.kid not in json.dumps(problem)  # the caller's text, never echoed


def hand_signed(
    url: str,
    key: SigningKey,
    params: str,
    *,
    covered: tuple[str, ...] = ("@method", "@target-uri", "content-digest"),
    label: str = "trm",
    method: str = "GET",
    body: bytes = b"",
) -> Headers:
    """A signature built by hand (RFC 9421 §2.5), so each test can break one rule only."""
    digest = digest_of(body)
    values = {
        "@method": method,
        "@target-uri": url,
        "@path": httpx.URL(url).path,
        "@authority": httpx.URL(url).netloc.decode(),
        "content-digest": digest,
    }
    inner = "(" + " ".join(f'"{c}"' for c in covered) + ")" + params
    base = "".join(f'"{c}": {values[c]}\n' for c in covered) + f'"@signature-params": {inner}'
    signature = base64.b64encode(key.sign(base.encode())).decode()
    return [
        ("Content-Digest", digest),
        ("Signature-Input", f"{label}={inner}"),
        ("Signature", f"{label}=:{signature}:"),
    ]


def _params(**changes: str | None) -> str:
    """The profile's parameters, in order, with some changed (``None``: left out)."""
    values: dict[str, str | None] = {
        "created": str(int(datetime.now(UTC).timestamp())),
        "keyid": f'"{AT.signing.kid}"',
        "alg": '"ed25519"',
        "nonce": f'"{new_nonce()}"',
        "tag": '"trm-broker/v1"',
    }
    values.update(changes)
    return "".join(f";{name}={value}" for name, value in values.items() if value is not None)


PARAMETERS: dict[str, Callable[[], dict[str, Any]]] = {
    "no nonce": lambda: {"params": _params(nonce=None)},
    "no created": lambda: {"params": _params(created=None)},
    "no tag": lambda: {"params": _params(tag=None)},
    "no alg": lambda: {"params": _params(alg=None)},
    "no keyid": lambda: {"params": _params(keyid=None)},
    "expires added": lambda: {
        "params": _params() + f";expires={int(datetime.now(UTC).timestamp()) + 60}"
    },
    "another tag": lambda: {"params": _params(tag='"trm-broker/v2"')},
    "another alg": lambda: {"params": _params(alg='"hmac-sha256"')},
    "a short nonce": lambda: {"params": _params(nonce='"abc"')},
    "another label": lambda: {"params": _params(), "label": "sig1"},
    "content-digest not covered": lambda: {
        "params": _params(),
        "covered": ("@method", "@target-uri"),
    },
    "@path instead of @target-uri": lambda: {
        "params": _params(),
        "covered": ("@method", "@authority", "@path", "content-digest"),
    },
}


@pytest.mark.parametrize("deviation", sorted(PARAMETERS))
async def test_signature_parameters_outside_the_profile_are_refused(
    broker: Broker, deviation: str
) -> None:
    url = "http://broker/v1/inbox"
    deviating = hand_signed(url, AT.signing, **PARAMETERS[deviation]())
    refused = await broker.client.get(url, headers=deviating)
    assert_problem(refused, 401, "bad-signature")
    # The same construction within the profile is accepted: the deviation alone is refused.
    accepted = await broker.client.get(url, headers=hand_signed(url, AT.signing, _params()))
    assert accepted.status_code == 200, accepted.text


# --- replay -------------------------------------------------------------------------------


async def test_a_replayed_submission_is_refused_and_stored_once(any_broker: Broker) -> None:
    body = as_body(await consented_referral(any_broker))
    headers = list(sign_request("POST", URL, body, AT.signing).items())
    assert (await post(any_broker, headers, body)).status_code == 202
    await refused_and_nothing_stored(
        any_broker, lambda: post(any_broker, headers, body), 401, "replayed-request"
    )
    assert await any_broker.stored_counts() == (1, 1)


async def test_a_replayed_read_is_refused(any_broker: Broker) -> None:
    headers = sign_request("GET", "http://broker/v1/inbox", b"", NG.signing)
    assert (await any_broker.client.get("/v1/inbox", headers=headers)).status_code == 200
    replayed = await any_broker.client.get("/v1/inbox", headers=headers)
    assert_problem(replayed, 401, "replayed-request")


async def test_a_replayed_registry_change_is_refused_and_recorded_once(
    any_broker: Broker,
) -> None:
    path = f"/v1/participants/{DE.participant}/keys/{DE.encryption.kid}/revoke"
    headers = sign_request("POST", f"http://broker{path}", b"", any_broker.operator.signing)
    assert (await any_broker.client.post(path, headers=headers)).status_code == 200
    await refused_and_nothing_stored(
        any_broker,
        lambda: any_broker.client.post(path, headers=headers),
        401,
        "replayed-request",
    )
    registry = (await any_broker.client.get("/v1/participants")).json()["participants"]
    [de] = [p for p in registry if p["id"] == DE.participant]
    assert [c["action"] for c in de["changes"]] == ["participant.registered", "key.revoked"]


async def test_a_nonce_is_spent_for_every_request_of_its_key(any_broker: Broker) -> None:
    nonce = new_nonce()
    url = "http://broker/v1/inbox"
    first = sign_request("GET", url, b"", NG.signing, nonce=nonce)
    assert (await any_broker.client.get(url, headers=first)).status_code == 200
    # A new request, newly signed, to another URL: still the same key's spent nonce.
    other = f"{url}?limit=5"
    again = sign_request("GET", other, b"", NG.signing, nonce=nonce)
    assert_problem(await any_broker.client.get(other, headers=again), 401, "replayed-request")
    # Another key may use the same nonce: nonces are the signer's, per key.
    by_at = sign_request("GET", url, b"", AT.signing, nonce=nonce)
    assert (await any_broker.client.get(url, headers=by_at)).status_code == 200


async def test_a_consent_registration_replayed_concurrently_is_stored_once(
    any_broker: Broker,
) -> None:
    consent = {
        "id": "cns-replayed",
        "case_ref": "AT-replay-0001",
        "given_by": "person",
        "purposes": ["referral"],
        "recipients": [NG.participant],
        "data_categories": ["identity"],
        "valid_from": datetime.now(UTC).isoformat(),
        "form_digest": "sha-256:" + "D" * 43,
    }
    body = json.dumps(consent).encode()
    signed = sign_request("POST", "http://broker/v1/consents", body, AT.signing)
    headers = {**signed, "content-type": "application/json"}
    before = await fingerprint(any_broker)
    responses = await asyncio.gather(
        *(any_broker.client.post("/v1/consents", content=body, headers=headers) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [201, 401, 401, 401]
    for replayed in (r for r in responses if r.status_code == 401):
        assert_problem(replayed, 401, "replayed-request")
    after = await fingerprint(any_broker)
    assert after["consents"] == before["consents"] + 1
    assert after["ledger entries"] == before["ledger entries"] + 1


# --- signed envelopes ---------------------------------------------------------------------


def with_header(
    signed: dict[str, str], header: dict[str, Any], sign: Callable[[bytes], bytes]
) -> dict[str, str]:
    """The envelope's payload under another protected header, signed by ``sign``."""
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    signing_input = f"{protected}.{signed['payload']}".encode()
    return {
        "protected": protected,
        "payload": signed["payload"],
        "signature": b64url_encode(sign(signing_input)),
    }


def hs256_with_senders_public_key(data: bytes) -> bytes:
    # The classic confusion: the verifier's public key used as an HMAC secret.
    return hmac.new(b64url_decode(AT.signing.public_b64), data, hashlib.sha256).digest()


@pytest.mark.parametrize(
    ("alg", "sign"),
    [
        ("RS256", lambda data: b"\x01" * 256),
        ("HS256", hs256_with_senders_public_key),
        ("EdDSA ", AT.signing.sign),  # near misses are other algorithms too
        ("ed25519", AT.signing.sign),
    ],
    ids=["RS256", "HS256-keyed-with-the-public-key", "EdDSA-with-space", "ed25519"],
)
async def test_an_envelope_with_another_alg_is_refused(
    broker: Broker, alg: str, sign: Callable[[bytes], bytes]
) -> None:
    signed = await consented_referral(broker)
    header = {"alg": alg, "kid": AT.signing.kid, "typ": jws.TYP_ENVELOPE}
    forged = with_header(signed, header, sign)
    await refused_and_nothing_stored(broker, lambda: broker.submit(forged), 400, "invalid-envelope")


def _jwk(key: SigningKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": key.public_b64, "kid": key.kid}


EMBEDDED: dict[str, dict[str, Any]] = {
    "jwk": {"jwk": _jwk(ATTACKER)},
    "jku": {"jku": "https://attacker.example/keys.json"},
    "x5c": {"x5c": [base64.b64encode(b"not a certificate").decode()]},
    "x5u": {"x5u": "https://attacker.example/cert.pem"},
}


@pytest.mark.parametrize("member", sorted(EMBEDDED))
async def test_an_embedded_key_is_never_trusted(broker: Broker, member: str) -> None:
    signed = await consented_referral(broker)
    header = {"alg": "EdDSA", "typ": jws.TYP_ENVELOPE, **EMBEDDED[member]}
    # Naming the sender's kid: verified with the sender's registered key, it fails.
    as_sender = with_header(signed, {**header, "kid": AT.signing.kid}, ATTACKER.sign)
    await refused_and_nothing_stored(broker, lambda: broker.submit(as_sender), 401, "bad-signature")
    # Naming the embedded key's own kid: not a registered key.
    as_itself = with_header(signed, {**header, "kid": ATTACKER.kid}, ATTACKER.sign)
    await refused_and_nothing_stored(
        broker, lambda: broker.submit(as_itself, signer=AT), 403, "unknown-sender"
    )


async def test_another_kind_of_signed_object_is_not_an_envelope(broker: Broker) -> None:
    accepted = await broker.submit(await consented_referral(broker))
    receipt = accepted.json()["receipt"]
    claims = json.loads(b64url_decode((await consented_referral(broker))["payload"]))
    ack = jws.sign(claims, AT.signing, jws.TYP_ACK)  # an envelope's claims, signed as an ack
    await refused_and_nothing_stored(
        broker, lambda: broker.submit(receipt, signer=AT), 400, "invalid-envelope"
    )
    await refused_and_nothing_stored(
        broker, lambda: broker.submit(ack, signer=AT), 400, "invalid-envelope"
    )


# --- sealed payloads ----------------------------------------------------------------------


def resealed(
    sender: KeySet, recipient: KeySet, sealed_from: dict[str, str], **changes: Any
) -> dict[str, str]:
    """A new envelope of ``sender``'s carrying another envelope's ``sealed`` member."""
    fresh = referral(sender, recipient, destination_country=changes.pop("country", "NG"))
    claims = json.loads(b64url_decode(fresh["payload"]))
    claims["sealed"] = json.loads(b64url_decode(sealed_from["payload"]))["sealed"]
    return jws.sign(claims, sender.signing, jws.TYP_ENVELOPE)


async def test_a_ciphertext_moved_to_another_recipient_is_refused(broker: Broker) -> None:
    original = referral(AT, NG)
    moved = resealed(AT, DE, original, country="DE")
    await broker._consent_for(moved)
    await refused_and_nothing_stored(broker, lambda: broker.submit(moved), 400, "invalid-envelope")


async def test_a_ciphertext_moved_into_another_envelope_does_not_open_at_the_node(
    broker: Broker, tmp_path: Path
) -> None:
    """The broker never opens payloads, so it cannot see a ciphertext lifted into another
    envelope to the same recipient (sealed to the right key): it accepts it. The HPKE
    binding (id, type, case, sender, recipient) makes the recipient's node refuse it."""
    original = referral(AT, NG, payload={"identification": "Canary-Moved-Payload"})
    pushes: dict[str, dict[str, Any]] = {}
    for name, signed in [
        ("original", original),
        ("lifted by a third party", resealed(FR, NG, original)),
        ("reused by its sender", resealed(AT, NG, original)),
    ]:
        response = await broker.submit(signed)
        assert response.status_code == 202, response.text  # the broker cannot tell
        pushes[name] = {"envelope": signed, "receipt": response.json()["receipt"]}
    key_file = tmp_path / "ng.json"
    NG.write(key_file)
    broker_key = broker.app.state.broker.signing_key
    async with running_node(tmp_path, [key_file], broker.client, "t") as node:

        async def push(name: str) -> httpx.Response:
            auth = SignedRequests(broker_key)
            return await node.post("/inbox", json=pushes[name], auth=auth)

        for name in ("lifted by a third party", "reused by its sender"):
            assert_problem(await push(name), 400, "invalid-envelope")
        stored = await node.get("/messages", headers={"authorization": "Bearer t"})
        assert stored.json()["messages"] == []
        assert (await push("original")).status_code == 200  # the genuine one opens


# --- acknowledgements ---------------------------------------------------------------------


def ack_claims(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "v": 1,
        "message_id": item["message_id"],
        "envelope_digest": jws.digest(item["envelope"]),
        "recipient": NG.participant,
        "received_at": "2026-11-23T00:00:00.000Z",
        "status": "received",
    }


def forged_ack(
    claims: dict[str, Any], header: dict[str, Any], sign: Callable[[bytes], bytes]
) -> dict[str, str]:
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    payload = b64url_encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    signature = sign(f"{protected}.{payload}".encode())
    return {"protected": protected, "payload": payload, "signature": b64url_encode(signature)}


REVOKED_NG_KEY = SigningKey.generate()
NONE = {"alg": "none", "kid": NG.signing.kid, "typ": jws.TYP_ACK}
HS256 = {"alg": "HS256", "kid": NG.signing.kid, "typ": jws.TYP_ACK}
EDDSA = {"alg": "EdDSA", "kid": NG.signing.kid, "typ": jws.TYP_ACK}


def hs256_with_recipients_public_key(data: bytes) -> bytes:
    return hmac.new(b64url_decode(NG.signing.public_b64), data, hashlib.sha256).digest()


FORGED_ACKS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "alg none, no signature": (
        lambda item: {**forged_ack(ack_claims(item), NONE, NG.signing.sign), "signature": ""},
        "ack_malformed",
    ),
    "alg none, signed": (
        lambda item: forged_ack(ack_claims(item), NONE, NG.signing.sign),
        "ack_malformed",
    ),
    "HS256 keyed with the public key": (
        lambda item: forged_ack(ack_claims(item), HS256, hs256_with_recipients_public_key),
        "ack_malformed",
    ),
    "the broker's receipt": (lambda item: item["receipt"], "ack_malformed"),
    "the envelope itself": (lambda item: item["envelope"], "ack_malformed"),
    "another key under the recipient's kid": (
        lambda item: forged_ack(ack_claims(item), EDDSA, ATTACKER.sign),
        "ack_bad_signature",
    ),
    "an embedded jwk": (
        lambda item: forged_ack(
            ack_claims(item),
            {**EDDSA, "jwk": _jwk(ATTACKER)},
            ATTACKER.sign,
        ),
        "ack_bad_signature",
    ),
    "a revoked key of the recipient": (
        lambda item: jws.sign(ack_claims(item), REVOKED_NG_KEY, jws.TYP_ACK),
        "ack_key_not_usable",
    ),
}


@pytest.mark.parametrize("forgery", sorted(FORGED_ACKS))
async def test_a_forged_acknowledgement_is_refused_and_the_message_stays(
    broker: Broker, forgery: str
) -> None:
    rotation = {"use": "sig", "alg": "Ed25519", "public": REVOKED_NG_KEY.public_b64}
    path = f"/v1/participants/{NG.participant}/keys"
    assert (await broker.call("POST", path, broker.operator, json=rotation)).status_code == 201
    revoke = f"{path}/{REVOKED_NG_KEY.kid}/revoke"
    assert (await broker.call("POST", revoke, broker.operator)).status_code == 200
    message_id = (await broker.submit(await consented_referral(broker))).json()["message_id"]
    [item] = (await broker.call("GET", "/v1/inbox", NG)).json()["items"]
    make, reason = FORGED_ACKS[forgery]
    problem = await refused_and_nothing_stored(
        broker,
        lambda: broker.call("POST", f"/v1/inbox/{message_id}/ack", NG, json={"ack": make(item)}),
        422,
        "invalid-ack",
    )
    assert problem["reason"] == reason
    status = (await broker.status(message_id, AT)).json()
    assert (status["status"], status["delivery"]["acknowledged_at"]) == ("delivered", None)


async def test_a_pushed_ack_with_alg_none_is_a_failed_attempt(broker: Broker) -> None:
    message_id = (await broker.submit(await consented_referral(broker))).json()["message_id"]

    def node(request: httpx.Request) -> httpx.Response:
        pushed = json.loads(request.content)
        item = {"message_id": message_id, "envelope": pushed["envelope"]}
        ack = {**forged_ack(ack_claims(item), NONE, NG.signing.sign), "signature": ""}
        return httpx.Response(200, json={"ack": ack})

    state = broker.app.state.broker
    async with httpx.AsyncClient(transport=httpx.MockTransport(node)) as http:
        dispatcher = DeliveryDispatcher(
            state.sessions,
            http,
            timeout=5,
            poll_interval=0.1,
            backoff_cap=1,
            policy=InboxPolicy(allow_loopback=True),
            signing_key=state.signing_key,
        )
        assert await dispatcher.run_once() == 1
    status = (await broker.status(message_id, AT)).json()
    assert status["status"] == "accepted"
    assert (status["delivery"]["status"], status["delivery"]["last_error"]) == (
        "pending",
        "ack_malformed",
    )
