"""The one envelope verifier, without a database or a server: each stable code is raised by
an envelope, receipt or push crafted to fail exactly that check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import referral
from trm_broker.crypto import envelopes, jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.envelopes import KeyRecord
from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.keys import (
    KeySet,
    SigningKey,
    generate_encryption_key,
    load_ed25519_public,
)
from trm_broker.domain.signed_objects import ReceiptClaims
from trm_broker.node.broker_client import BrokerKey

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
BROKER = SigningKey.generate()
NOW = datetime.now(UTC)
SKEW = timedelta(minutes=5)


def record(keys: KeySet, **changes: Any) -> KeyRecord:
    values: dict[str, Any] = {
        "kid": keys.signing.kid,
        "participant": keys.participant,
        "use": "sig",
        "public": keys.signing.public_b64,
        "valid_from": NOW - timedelta(days=1),
    }
    return KeyRecord(**(values | changes))


def lookup(*records: KeyRecord) -> envelopes.KeyLookup:
    found = {r.kid: r for r in records}

    async def find(kid: str) -> KeyRecord | None:
        return found.get(kid)

    return find


REGISTRY = lookup(record(AT), record(NG))


async def broker_keys(kid: str) -> BrokerKey | None:
    return BrokerKey(kid, load_ed25519_public(BROKER.public_b64)) if kid == BROKER.kid else None


def claims_of(envelope: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(b64url_decode(envelope["payload"]))
    return result


def signed(header: dict[str, Any], payload: bytes, key: SigningKey) -> dict[str, str]:
    protected, body = b64url_encode(canonical_json(header)), b64url_encode(payload)
    signature = key.sign(f"{protected}.{body}".encode())
    return {"protected": protected, "payload": body, "signature": b64url_encode(signature)}


def receipt_for(envelope: dict[str, str], key: SigningKey = BROKER, **changes: Any) -> Any:
    claims = ReceiptClaims(
        v=1,
        message_id=claims_of(envelope)["id"],
        envelope_digest=jws.digest(envelope),
        accepted_at=(NOW - timedelta(seconds=1)).isoformat().replace("+00:00", "Z"),
        ledger_index=None,
    ).model_dump(mode="json")
    return jws.sign(claims | changes, key, jws.TYP_RECEIPT)


async def refusal(envelope: object, keys: envelopes.KeyLookup = REGISTRY) -> VerificationError:
    with pytest.raises(VerificationError) as raised:
        await envelopes.verify_envelope(envelope, keys, at=NOW)
    return raised.value


async def test_a_valid_envelope_verifies_with_its_senders_key() -> None:
    envelope = referral(AT, NG)
    verified = await envelopes.verify_envelope(envelope, REGISTRY, at=NOW)
    assert verified.envelope.sender == AT.participant
    assert verified.kid == AT.signing.kid
    assert verified.digest == jws.digest(envelope)


@pytest.mark.parametrize(
    "envelope",
    [
        "not an object",
        {"protected": "x", "payload": "y"},
        {**referral(AT, NG), "signature": "+" * 86},  # standard base64, not base64url
    ],
    ids=["text", "missing-member", "standard-base64"],
)
async def test_what_is_not_a_flattened_jws_is_malformed(envelope: object) -> None:
    assert (await refusal(envelope)).code is Code.MALFORMED


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256"])
async def test_any_alg_but_eddsa_is_unsupported(alg: str) -> None:
    envelope = referral(AT, NG)
    header = {"alg": alg, "kid": AT.signing.kid, "typ": jws.TYP_ENVELOPE}
    forged = {**envelope, "protected": b64url_encode(canonical_json(header))}
    assert (await refusal(forged)).code is Code.UNSUPPORTED_ALG


async def test_another_kind_of_signed_object_has_the_wrong_typ() -> None:
    ack = jws.sign(claims_of(referral(AT, NG)), AT.signing, jws.TYP_ACK)
    assert (await refusal(ack)).code is Code.WRONG_TYP


async def test_an_unregistered_kid_is_an_unknown_key_and_is_not_named() -> None:
    stranger = KeySet.generate("at.focal-point")
    error = await refusal(referral(stranger, NG))
    assert error.code is Code.UNKNOWN_KEY
    assert error.kid is None
    assert stranger.signing.kid not in str(error)


async def test_an_encryption_key_is_not_a_signing_key() -> None:
    keys = lookup(record(AT, use="enc"))
    assert (await refusal(referral(AT, NG), keys)).code is Code.UNKNOWN_KEY


@pytest.mark.parametrize(
    "changes",
    [
        {"revoked_at": NOW - timedelta(seconds=1)},
        {"valid_until": NOW},
        {"valid_from": NOW + timedelta(seconds=1)},
    ],
    ids=["revoked", "expired", "not-yet-valid"],
)
async def test_a_key_outside_its_validity_is_not_usable(changes: dict[str, Any]) -> None:
    error = await refusal(referral(AT, NG), lookup(record(AT, **changes)))
    assert error.code is Code.KEY_NOT_USABLE
    assert error.kid == AT.signing.kid


async def test_a_key_is_judged_at_the_time_given() -> None:
    """A node judges the key at the broker's acceptance time: revoked later, it still counts."""
    keys = lookup(record(AT, revoked_at=NOW + timedelta(minutes=1)))
    await envelopes.verify_envelope(referral(AT, NG), keys, at=NOW)
    with pytest.raises(VerificationError) as raised:
        await envelopes.verify_envelope(referral(AT, NG), keys, at=NOW + timedelta(minutes=1))
    assert raised.value.code is Code.KEY_NOT_USABLE


@pytest.mark.parametrize("member", ["signature", "payload"])
async def test_a_flipped_bit_is_a_bad_signature(member: str) -> None:
    envelope = referral(AT, NG)
    raw = bytearray(b64url_decode(envelope[member]))
    raw[7] ^= 0x01
    flipped = {**envelope, member: b64url_encode(bytes(raw))}
    assert (await refusal(flipped)).code is Code.BAD_SIGNATURE


async def test_another_key_under_the_senders_kid_is_a_bad_signature() -> None:
    envelope = referral(AT, NG)
    forged = signed(
        {"alg": "EdDSA", "kid": AT.signing.kid, "typ": jws.TYP_ENVELOPE},
        b64url_decode(envelope["payload"]),
        SigningKey.generate(),
    )
    assert (await refusal(forged)).code is Code.BAD_SIGNATURE


async def test_a_signed_payload_that_is_not_canonical_json_is_refused() -> None:
    spaced = json.dumps(claims_of(referral(AT, NG)), indent=1).encode()
    header = {"alg": "EdDSA", "kid": AT.signing.kid, "typ": jws.TYP_ENVELOPE}
    assert (await refusal(signed(header, spaced, AT.signing))).code is Code.NOT_CANONICAL


async def test_a_schema_mismatch_names_the_members_without_their_values() -> None:
    secret = "Jane Doe born 1990"
    claims = claims_of(referral(AT, NG)) | {secret: "x", "case_ref": secret}
    error = await refusal(jws.sign(claims, AT.signing, jws.TYP_ENVELOPE))
    assert error.code is Code.SCHEMA_MISMATCH
    assert set(error.fields) == {"(unknown member)", "case_ref"}
    assert secret not in str(error)


async def test_a_key_that_is_not_the_senders_is_a_sender_mismatch() -> None:
    # NG signs, with its own registered key, an envelope that names AT as its sender.
    claims = claims_of(referral(AT, NG))
    error = await refusal(jws.sign(claims, NG.signing, jws.TYP_ENVELOPE))
    assert error.code is Code.SENDER_MISMATCH
    assert error.kid == NG.signing.kid


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
async def test_created_at_outside_the_skew_is_stale(offset: timedelta) -> None:
    verified = await envelopes.verify_envelope(referral(AT, NG, now=NOW + offset), REGISTRY, at=NOW)
    with pytest.raises(VerificationError) as raised:
        envelopes.require_fresh(verified.envelope, NOW, SKEW)
    assert raised.value.code is Code.STALE
    envelopes.require_fresh(verified.envelope, NOW + offset, SKEW)  # fresh at its own time


# --- the node's push: the envelope with the broker's receipt ---------------------------


async def push_refusal(push: object) -> VerificationError:
    with pytest.raises(VerificationError) as raised:
        await envelopes.verify_push(push, REGISTRY, broker_keys)
    return raised.value


async def test_a_push_with_the_brokers_receipt_verifies_at_the_acceptance_time() -> None:
    envelope = referral(AT, NG)
    verified = await envelopes.verify_push(
        {"envelope": envelope, "receipt": receipt_for(envelope)}, REGISTRY, broker_keys
    )
    assert verified.envelope.digest == jws.digest(envelope)
    assert verified.receipt.accepted_at == NOW - timedelta(seconds=1)


@pytest.mark.parametrize(
    "push",
    [referral(AT, NG), {"envelope": referral(AT, NG), "receipt": None}, []],
    ids=["envelope-alone", "no-receipt", "not-an-object"],
)
async def test_a_push_without_a_receipt_is_malformed(push: object) -> None:
    assert (await push_refusal(push)).code is Code.MALFORMED


async def test_a_receipt_for_another_envelope_is_a_digest_mismatch() -> None:
    envelope = referral(AT, NG)
    error = await push_refusal({"envelope": envelope, "receipt": receipt_for(referral(AT, NG))})
    assert error.code is Code.DIGEST_MISMATCH


async def test_a_receipt_naming_another_message_is_a_digest_mismatch() -> None:
    envelope = referral(AT, NG)
    receipt = receipt_for(envelope, message_id=claims_of(referral(AT, NG))["id"])
    error = await push_refusal({"envelope": envelope, "receipt": receipt})
    assert error.code is Code.DIGEST_MISMATCH


async def test_a_receipt_not_by_the_broker_is_refused() -> None:
    envelope = referral(AT, NG)
    by_sender = receipt_for(envelope, AT.signing)
    error = await push_refusal({"envelope": envelope, "receipt": by_sender})
    assert error.code is Code.NOT_BROKER_KEY


async def test_a_receipt_by_a_retired_broker_key_vouches_only_for_earlier_acceptances() -> None:
    envelope = referral(AT, NG)
    push = {"envelope": envelope, "receipt": receipt_for(envelope)}

    async def retired(kid: str) -> BrokerKey | None:
        return BrokerKey(
            kid, load_ed25519_public(BROKER.public_b64), retired_at=NOW - timedelta(minutes=1)
        )

    with pytest.raises(VerificationError) as raised:
        await envelopes.verify_push(push, REGISTRY, retired)
    assert raised.value.code is Code.NOT_BROKER_KEY


async def test_a_forged_receipt_under_the_brokers_kid_is_a_bad_signature() -> None:
    envelope = referral(AT, NG)
    receipt = receipt_for(envelope)
    raw = bytearray(b64url_decode(receipt["signature"]))
    raw[0] ^= 0x01
    forged = {**receipt, "signature": b64url_encode(bytes(raw))}
    error = await push_refusal({"envelope": envelope, "receipt": forged})
    assert error.code is Code.BAD_SIGNATURE


async def test_the_envelope_of_a_push_is_verified_at_the_brokers_acceptance_time() -> None:
    envelope = referral(AT, NG)
    push = {"envelope": envelope, "receipt": receipt_for(envelope)}
    revoked_before = lookup(record(AT, revoked_at=NOW - timedelta(seconds=2)))
    revoked_after = lookup(record(AT, revoked_at=NOW))
    await envelopes.verify_push(push, revoked_after, broker_keys)
    with pytest.raises(VerificationError) as raised:
        await envelopes.verify_push(push, revoked_before, broker_keys)
    assert raised.value.code is Code.KEY_NOT_USABLE


# --- the sealed payload -----------------------------------------------------------------


async def test_a_payload_opens_only_with_the_recipients_key_and_binding() -> None:
    envelope = referral(AT, NG, payload={"form_of_exploitation": "forced_labour"})
    verified = await envelopes.verify_envelope(envelope, REGISTRY, at=NOW)
    _, payload = envelopes.open_payload(verified.envelope, NG.encryption)
    assert payload == {"form_of_exploitation": "forced_labour"}
    with pytest.raises(VerificationError) as raised:
        envelopes.open_payload(verified.envelope, generate_encryption_key("X25519"))
    assert raised.value.code is Code.SEAL_DOES_NOT_OPEN
    # The same ciphertext moved into another envelope to the same recipient.
    other = claims_of(referral(AT, NG)) | {"sealed": claims_of(envelope)["sealed"]}
    moved = await envelopes.verify_envelope(
        jws.sign(other, AT.signing, jws.TYP_ENVELOPE), REGISTRY, at=NOW
    )
    with pytest.raises(VerificationError) as raised:
        envelopes.open_payload(moved.envelope, NG.encryption)
    assert raised.value.code is Code.SEAL_DOES_NOT_OPEN
