"""Test vectors for other implementations: `trm-broker contract vectors`.

One JSON file holds a small registry (with a revoked key), the private keys behind it, and
cases — envelopes, receipts, signed requests — each with the verdict a correct verifier
reaches at the file's ``now``. ``contracts/verify_vectors.py`` checks them with nothing
but ``cryptography`` and ``rfc8785``; our own test checks them with this package.

Signatures are deterministic (Ed25519) but sealing is not (HPKE draws an ephemeral key),
so the committed file is generated once and kept; a test regenerates a fresh set and
checks that it verifies too, so the code and the vectors cannot drift apart.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from http_message_signatures import HTTPMessageSigner, algorithms

from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.http_signatures import sign_request
from trm_broker.crypto.keys import AnyEncryptionKey, SigningKey, generate_encryption_key
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.signed_objects import AckClaims, ReceiptClaims
from trm_broker.domain.times import rfc3339
from trm_broker.node.compose import compose_envelope

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BROKER_URL = "https://broker.trm.example"
REQUEST_WINDOW_SECONDS = 300
PAYLOAD: dict[str, Any] = {
    "form_of_exploitation": "forced_labour",
    "immediate_needs": ["shelter", "medical_check"],
    "interpreter_needed": True,
    "is_child": False,
    "languages": ["en", "pcm"],
}


def _iso(moment: datetime | None) -> str | None:
    return rfc3339(moment, timespec="auto") if moment else None


class _Keys:
    def __init__(self) -> None:
        self.at_sig = SigningKey.generate()
        self.at_sig_revoked = SigningKey.generate()
        self.at_enc = generate_encryption_key("X25519")
        self.ng_sig = SigningKey.generate()
        self.ng_sig_revoked = SigningKey.generate()
        self.ng_enc = generate_encryption_key("X25519")
        self.ng_enc_pq = generate_encryption_key("MLKEM768-X25519")
        self.broker = SigningKey.generate()

    def registry(self) -> list[dict[str, Any]]:
        def entry(
            participant: str,
            key: SigningKey | AnyEncryptionKey,
            *,
            revoked_at: datetime | None = None,
        ) -> dict[str, Any]:
            return {
                "participant": participant,
                "kid": key.kid,
                "use": "sig" if isinstance(key, SigningKey) else "enc",
                "alg": "Ed25519" if isinstance(key, SigningKey) else key.alg,
                "public": key.public_b64,
                "valid_from": _iso(NOW - timedelta(days=30)),
                "valid_until": None,
                "revoked_at": _iso(revoked_at),
            }

        return [
            entry("at.focal-point", self.at_sig),
            entry("at.focal-point", self.at_sig_revoked, revoked_at=NOW - timedelta(days=1)),
            entry("at.focal-point", self.at_enc),
            entry("ng.naptip", self.ng_sig),
            entry("ng.naptip", self.ng_sig_revoked, revoked_at=NOW - timedelta(days=1)),
            entry("ng.naptip", self.ng_enc),
            entry("ng.naptip", self.ng_enc_pq),
        ]

    def private(self) -> dict[str, str]:
        return {
            self.at_sig.kid: self.at_sig.seed_b64(),
            self.at_sig_revoked.kid: self.at_sig_revoked.seed_b64(),
            self.at_enc.kid: self.at_enc.secret_b64(),
            self.ng_sig.kid: self.ng_sig.seed_b64(),
            self.ng_sig_revoked.kid: self.ng_sig_revoked.seed_b64(),
            self.ng_enc.kid: self.ng_enc.secret_b64(),
            self.ng_enc_pq.kid: self.ng_enc_pq.secret_b64(),
            self.broker.kid: self.broker.seed_b64(),
        }


def _envelope(
    signer: SigningKey, recipient_key: AnyEncryptionKey, *, message_id: str | None = None
) -> dict[str, str]:
    return _compose(signer, recipient_key, message_id)[1]


def _compose(
    signer: SigningKey, recipient_key: AnyEncryptionKey, message_id: str | None
) -> tuple[Any, dict[str, str]]:
    return compose_envelope(
        signing_key=signer,
        sender="at.focal-point",
        recipient="ng.naptip",
        recipient_enc_kid=recipient_key.kid,
        recipient_enc_public=recipient_key.public_b64,
        recipient_enc_alg=recipient_key.alg,
        type=MessageType.REFERRAL,
        case_ref="AT-2026-0042",
        header={"destination_country": "NG", "subject_is_minor": False},
        payload=PAYLOAD,
        data_categories=[DataCategory.IDENTITY, DataCategory.HEALTH],
        consent_ref=None,
        in_reply_to=None,
        now=NOW - timedelta(seconds=30),
        message_id=message_id,
    )


def _flip(text: str, index: int) -> str:
    """The base64url text with one bit flipped in byte ``index`` of what it encodes."""
    raw = bytearray(b64url_decode(text))
    raw[index] ^= 0x01
    return b64url_encode(bytes(raw))


def _claims(envelope: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(b64url_decode(envelope["payload"]))
    return result


def _resign(claims: dict[str, Any], key: SigningKey, header: dict[str, str] | None = None) -> Any:
    if header is None:
        return jws.sign(claims, key, jws.TYP_ENVELOPE)
    protected = b64url_encode(canonical_json(header))
    payload = b64url_encode(canonical_json(claims))
    signature = key.sign(f"{protected}.{payload}".encode())
    return {"protected": protected, "payload": payload, "signature": b64url_encode(signature)}


def _ok(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"valid": True, "payload": payload} if payload is not None else {"valid": True}


def _bad(error: str) -> dict[str, Any]:
    return {"valid": False, "error": error}


def _envelope_cases(keys: _Keys) -> list[dict[str, Any]]:
    valid = _envelope(keys.at_sig, keys.ng_enc)
    valid_pq = _envelope(keys.at_sig, keys.ng_enc_pq)
    moved_claims = _claims(_envelope(keys.at_sig, keys.ng_enc))
    moved_claims["sealed"] = _claims(valid)["sealed"]  # another envelope's ciphertext
    header = {"alg": "EdDSA", "kid": keys.at_sig.kid, "typ": jws.TYP_ENVELOPE}
    spaced = dict(valid)
    spaced["payload"] = b64url_encode(json.dumps(_claims(valid), indent=1).encode())
    spaced = _resign_raw(spaced, keys.at_sig)
    cases = [
        ("valid-x25519", valid, _ok(PAYLOAD)),
        ("valid-mlkem768-x25519", valid_pq, _ok(PAYLOAD)),
        (
            "flipped-signature-bit",
            {**valid, "signature": _flip(valid["signature"], 5)},
            _bad("bad-signature"),
        ),
        (
            "flipped-payload-bit",
            {**valid, "payload": _flip(valid["payload"], 40)},
            _bad("bad-signature"),
        ),
        (
            "wrong-kid",
            _resign(_claims(valid), keys.at_sig, {**header, "kid": keys.ng_sig.kid}),
            _bad("bad-signature"),
        ),
        (
            "unknown-kid",
            _resign(
                _claims(valid), SigningKey.generate(), {**header, "kid": SigningKey.generate().kid}
            ),
            _bad("unknown-key"),
        ),
        (
            "revoked-key",
            _resign(
                _claims(valid), keys.at_sig_revoked, {**header, "kid": keys.at_sig_revoked.kid}
            ),
            _bad("key-not-usable"),
        ),
        (
            "signed-by-recipient",
            _resign(_claims(valid), keys.ng_sig, {**header, "kid": keys.ng_sig.kid}),
            _bad("sender-mismatch"),
        ),
        ("moved-ciphertext", _resign(moved_claims, keys.at_sig), _bad("seal-does-not-open")),
        (
            "alg-none",
            {**_resign(_claims(valid), keys.at_sig, {**header, "alg": "none"}), "signature": ""},
            _bad("unsupported-alg"),
        ),
        ("not-canonical", spaced, _bad("not-canonical")),
        (
            "padded-standard-base64-signature",
            {**valid, "signature": base64.b64encode(b64url_decode(valid["signature"])).decode()},
            _bad("malformed"),
        ),
    ]
    return [
        {"name": f"envelope/{name}", "kind": "envelope", "envelope": env, "expect": expect}
        for name, env, expect in cases
    ]


def _resign_raw(obj: dict[str, str], key: SigningKey) -> dict[str, str]:
    """Sign an object's exact payload bytes (even non-canonical ones) with ``key``."""
    header = {"alg": "EdDSA", "kid": key.kid, "typ": jws.TYP_ENVELOPE}
    protected = b64url_encode(canonical_json(header))
    signature = key.sign(f"{protected}.{obj['payload']}".encode())
    return {
        "protected": protected,
        "payload": obj["payload"],
        "signature": b64url_encode(signature),
    }


def _receipt(keys: _Keys, envelope: dict[str, str], signer: SigningKey) -> dict[str, str]:
    claims = ReceiptClaims(
        v=1,
        message_id=_claims(envelope)["id"],
        envelope_digest=jws.digest(envelope),
        accepted_at=_iso(NOW - timedelta(seconds=29)) or "",
        ledger_index=None,
    )
    return jws.sign(claims.model_dump(mode="json"), signer, jws.TYP_RECEIPT)


def _receipt_cases(keys: _Keys) -> list[dict[str, Any]]:
    envelope = _envelope(keys.at_sig, keys.ng_enc)
    other = _envelope(keys.at_sig, keys.ng_enc)
    cases = [
        ("valid", envelope, _receipt(keys, envelope, keys.broker), _ok()),
        (
            "for-another-envelope",
            envelope,
            _receipt(keys, other, keys.broker),
            _bad("digest-mismatch"),
        ),
        (
            "not-by-the-broker",
            envelope,
            _receipt(keys, envelope, keys.at_sig),
            _bad("not-broker-key"),
        ),
    ]
    return [
        {
            "name": f"receipt/{name}",
            "kind": "receipt",
            "envelope": env,
            "receipt": receipt,
            "expect": expect,
        }
        for name, env, receipt, expect in cases
    ]


def _ack_claims(envelope: dict[str, str], **changes: Any) -> dict[str, Any]:
    """The claims a node signs for ``envelope`` (a received one unless ``changes`` say)."""
    claims = AckClaims(
        v=1,
        message_id=_claims(envelope)["id"],
        envelope_digest=jws.digest(envelope),
        recipient=_claims(envelope)["recipient"],
        received_at=_iso(NOW - timedelta(seconds=20)) or "",
        status="received",
    ).signed_claims()
    return {**claims, **changes}


def _sign_ack(payload: bytes, key: SigningKey, **header: str) -> dict[str, str]:
    """Sign ``payload``'s exact bytes as an acknowledgement, with ``header`` changes."""
    protected = b64url_encode(
        canonical_json({"alg": "EdDSA", "kid": key.kid, "typ": jws.TYP_ACK, **header})
    )
    signing_input = f"{protected}.{b64url_encode(payload)}".encode()
    return {
        "protected": protected,
        "payload": b64url_encode(payload),
        "signature": b64url_encode(key.sign(signing_input)),
    }


def _ack_cases(keys: _Keys) -> list[dict[str, Any]]:
    """The recipient's signed answers to one envelope (contracts/schemas/acknowledgement.v1.json),
    with the code the broker gives a refused one (`last_error`, the pull inbox's `reason`)."""
    envelope = _envelope(keys.at_sig, keys.ng_enc)
    other = _envelope(keys.at_sig, keys.ng_enc)
    valid = jws.sign(_ack_claims(envelope), keys.ng_sig, jws.TYP_ACK)
    reasons = ["payload/immediate_needs/1: not a known code"]
    rejection = _ack_claims(envelope, status="rejected", reasons=reasons, code="payload-invalid")
    lie = _ack_claims(
        envelope,
        status="rejected",
        reasons=["header/risk_level: does not match the payload"],
        code="header-payload-mismatch",
    )

    def signed(claims: dict[str, Any], key: SigningKey = keys.ng_sig) -> dict[str, str]:
        return _sign_ack(canonical_json(claims), key)

    cases = [
        ("valid-received", valid, {"valid": True, "status": "received"}),
        (
            "valid-rejected",
            signed(rejection),
            {"valid": True, "status": "rejected", "code": "payload-invalid"},
        ),
        (
            "valid-rejected-header-payload-mismatch",
            signed(lie),
            {"valid": True, "status": "rejected", "code": "header-payload-mismatch"},
        ),
        (
            "flipped-signature-bit",
            {**valid, "signature": _flip(valid["signature"], 5)},
            _bad("ack_bad_signature"),
        ),
        ("for-another-envelope", signed(_ack_claims(other)), _bad("ack_mismatch")),
        (
            "for-another-recipient",
            signed(_ack_claims(envelope, recipient="at.focal-point")),
            _bad("ack_mismatch"),
        ),
        ("unknown-status", signed(_ack_claims(envelope, status="lost")), _bad("ack_mismatch")),
        (
            "signed-by-the-sender",
            signed(_ack_claims(envelope), keys.at_sig),
            _bad("ack_unknown_key"),
        ),
        (
            "unknown-kid",
            signed(_ack_claims(envelope), SigningKey.generate()),
            _bad("ack_unknown_key"),
        ),
        (
            "revoked-key",
            signed(_ack_claims(envelope), keys.ng_sig_revoked),
            _bad("ack_key_not_usable"),
        ),
        (
            "receipt-typ",
            jws.sign(_ack_claims(envelope), keys.ng_sig, jws.TYP_RECEIPT),
            _bad("ack_malformed"),
        ),
        (
            "alg-none",
            _sign_ack(canonical_json(_ack_claims(envelope)), keys.ng_sig, alg="none"),
            _bad("ack_malformed"),
        ),
        (
            "not-canonical",
            _sign_ack(json.dumps(_ack_claims(envelope), indent=1).encode(), keys.ng_sig),
            _bad("ack_malformed"),
        ),
        (
            "rejected-without-reasons",
            signed(_ack_claims(envelope, status="rejected", code="payload-invalid")),
            _bad("ack_malformed"),
        ),
        (
            "received-with-reasons",
            signed(_ack_claims(envelope, reasons=reasons)),
            _bad("ack_malformed"),
        ),
        (
            "rejected-without-code",
            signed(_ack_claims(envelope, status="rejected", reasons=reasons)),
            _bad("ack_malformed"),
        ),
        (
            "received-with-code",
            signed(_ack_claims(envelope, code="payload-invalid")),
            _bad("ack_malformed"),
        ),
        ("unknown-code", signed({**rejection, "code": "no-reason"}), _bad("ack_malformed")),
        (
            "unknown-member",
            signed(_ack_claims(envelope, note="a member the schema does not name")),
            _bad("ack_malformed"),
        ),
    ]
    return [
        {
            "name": f"acknowledgement/{name}",
            "kind": "acknowledgement",
            "envelope": envelope,
            "ack": ack,
            "expect": expect,
        }
        for name, ack, expect in cases
    ]


def _request(
    key: SigningKey, body: bytes, *, created: datetime, target: str = "/v1/messages"
) -> dict[str, Any]:
    url = BROKER_URL + target
    headers = sign_request("POST", url, body, key, created=created)
    return {
        "method": "POST",
        "target_uri": url,
        "headers": [["Content-Type", "application/jose+json"], *map(list, headers.items())],
        "body": b64url_encode(body),
    }


def _request_with_expires(key: SigningKey, body: bytes, created: datetime) -> dict[str, Any]:
    """A valid RFC 9421 signature that also has ``expires``: outside our profile."""
    url = BROKER_URL + "/v1/messages"

    @dataclass
    class _Message:
        method: str
        url: str
        headers: dict[str, str]

    message = _Message("POST", url, {})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=None)
    prepared = signer.prepare(
        message,
        key_id=key.kid,
        created=created,
        expires=created + timedelta(minutes=1),
        nonce="expires-test-nonce-0001",
        label="trm",
        tag="trm-broker/v1",
        covered_component_ids=("@method", "@target-uri", "content-digest"),
        body=body,
    )
    signer.apply(message, prepared, key.sign(prepared.signature_base))
    return {
        "method": "POST",
        "target_uri": url,
        "headers": [["Content-Type", "application/jose+json"], *map(list, message.headers.items())],
        "body": b64url_encode(body),
    }


def _request_cases(keys: _Keys) -> list[dict[str, Any]]:
    body = canonical_json(_envelope(keys.at_sig, keys.ng_enc))
    created = NOW - timedelta(seconds=10)
    valid = _request(keys.at_sig, body, created=created)
    moved = {**valid, "target_uri": BROKER_URL + "/v1/participants"}
    changed = {**valid, "body": b64url_encode(body.replace(b'"payload"', b'"payload" '))}
    cases = [
        ("valid", valid, _ok()),
        (
            "parameter-outside-the-profile",
            _request_with_expires(keys.at_sig, body, created),
            _bad("malformed"),
        ),
        ("body-changed", changed, _bad("digest-mismatch")),
        ("target-changed", moved, _bad("bad-signature")),
        ("too-old", _request(keys.at_sig, body, created=NOW - timedelta(minutes=6)), _bad("stale")),
        (
            "revoked-key",
            _request(keys.at_sig_revoked, body, created=created),
            _bad("key-not-usable"),
        ),
    ]
    return [
        {"name": f"request/{name}", "kind": "request", "request": request, "expect": expect}
        for name, request, expect in cases
    ]


def build() -> dict[str, Any]:
    keys = _Keys()
    return {
        "description": "trm-broker wire-contract test vectors; see contracts/README.md.",
        "now": _iso(NOW),
        "request_window_seconds": REQUEST_WINDOW_SECONDS,
        "broker": {"kid": keys.broker.kid, "alg": "Ed25519", "public": keys.broker.public_b64},
        "registry": keys.registry(),
        "private_keys": keys.private(),
        "cases": _envelope_cases(keys)
        + _receipt_cases(keys)
        + _request_cases(keys)
        + _ack_cases(keys),
    }


def write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")
    return path
