#!/usr/bin/env python3
"""Check the trm-broker wire-contract test vectors with nothing but `cryptography` and `rfc8785`.

    pip install cryptography rfc8785
    python verify_vectors.py vectors/vectors.json

This is a second, independent implementation of the checks a node or broker makes, written
from contracts/README.md and sharing no code with trm-broker. Hand it to whoever writes a
node in another language: their verifier should reach the same verdict on every case.
Exit status 0 when every case gets its expected verdict, 1 otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from datetime import datetime, timedelta
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

INFO_LABEL = b"trm-broker/v1 sealed payload\x00"
SUITES = {
    "DHKEM-X25519-HKDF-SHA256/HKDF-SHA256/ChaCha20Poly1305": ("X25519", hpke.KEM.X25519),
    "MLKEM768-X25519/HKDF-SHA256/ChaCha20Poly1305": ("MLKEM768-X25519", hpke.KEM.MLKEM768_X25519),
}
TYP_ENVELOPE, TYP_RECEIPT, TYP_ACK = "trm-envelope+jws", "trm-receipt+jws", "trm-ack+jws"
ACK_MEMBERS = {"v", "message_id", "envelope_digest", "recipient", "received_at", "status"}
REJECTION_CODES = {"payload-invalid", "header-payload-mismatch"}


class Refused(Exception):
    """A check failed; ``code`` is the verdict the vectors name."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def b64url(text: str) -> bytes:
    """Unpadded base64url, canonical only (one spelling per byte string)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise Refused("malformed")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(raw) != text:
        raise Refused("malformed")
    return raw


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Registry:
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.keys = {entry["kid"]: entry for entry in entries}

    @staticmethod
    def usable(entry: dict[str, Any], now: datetime) -> bool:
        """Not revoked, inside its validity."""
        if entry["revoked_at"] and parse_time(entry["revoked_at"]) <= now:
            return False
        if entry["valid_until"] and parse_time(entry["valid_until"]) <= now:
            return False
        return parse_time(entry["valid_from"]) <= now

    def signing_key(self, kid: str, now: datetime) -> tuple[str, Ed25519PublicKey]:
        """The participant and public key behind ``kid``, if usable at ``now``."""
        entry = self.keys.get(kid)
        if entry is None or entry["use"] != "sig":
            raise Refused("unknown-key")
        if not self.usable(entry, now):
            raise Refused("key-not-usable")
        return entry["participant"], Ed25519PublicKey.from_public_bytes(b64url(entry["public"]))


def verify_jws(obj: dict[str, str], typ: str) -> tuple[str, dict[str, Any], bytes, bytes]:
    """RFC 7515 flattened JSON: header checks; returns kid, claims, signing input, signature.

    The signature itself is checked by the caller once it knows the key."""
    if set(obj) != {"protected", "payload", "signature"}:
        raise Refused("malformed")
    header = json.loads(b64url(obj["protected"]))
    if header.get("alg") != "EdDSA" or "crit" in header:
        raise Refused("unsupported-alg")
    if header.get("typ") != typ:
        raise Refused("wrong-typ")
    signing_input = f"{obj['protected']}.{obj['payload']}".encode()
    return header["kid"], obj, signing_input, b64url(obj["signature"])


def check_signature(public: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    try:
        public.verify(signature, data)
    except InvalidSignature:
        raise Refused("bad-signature") from None


def canonical_claims(payload_b64: str) -> dict[str, Any]:
    """The JWS payload must be the RFC 8785 canonical JSON of an object."""
    raw = b64url(payload_b64)
    claims = json.loads(raw)
    if rfc8785.dumps(claims) != raw:
        raise Refused("not-canonical")
    return dict(claims)


def open_private_key(alg: str, secret: str) -> Any:
    raw = b64url(secret)
    if alg == "X25519":
        return X25519PrivateKey.from_private_bytes(raw)
    # MLKEM768-X25519 keys are stored as a 32-byte seed: SHAKE256 expands it to the
    # 64-byte ML-KEM-768 seed (d || z) followed by the X25519 private key.
    expanded = hashlib.shake_256(raw).digest(96)
    return hpke.MLKEM768X25519PrivateKey(
        MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


def check_envelope(case: dict[str, Any], vectors: dict[str, Any]) -> dict[str, Any]:
    now = parse_time(vectors["now"])
    registry = Registry(vectors["registry"])
    # 1. JWS structure and header: EdDSA only, typ trm-envelope+jws.
    kid, obj, signing_input, signature = verify_jws(case["envelope"], TYP_ENVELOPE)
    # 2. The key, from the registry, usable now; 3. the signature.
    signer, public = registry.signing_key(kid, now)
    check_signature(public, signature, signing_input)
    # 4. Canonical claims; 5. the signer is the sender.
    claims = canonical_claims(obj["payload"])
    if claims["sender"] != signer:
        raise Refused("sender-mismatch")
    # 6. Open the sealed payload with the recipient's key; info binds the envelope facts.
    sealed = claims["sealed"]
    key_alg, kem = SUITES[sealed["suite"]]
    entry = registry.keys.get(sealed["kid"])
    if (
        entry is None
        or entry["use"] != "enc"
        or entry["alg"] != key_alg
        or entry["participant"] != claims["recipient"]
        or not registry.usable(entry, now)
    ):
        raise Refused("seal-does-not-open")
    binding = {k: claims[k] for k in ("id", "type", "case_ref", "sender", "recipient")}
    info = INFO_LABEL + rfc8785.dumps(binding)
    private = open_private_key(key_alg, vectors["private_keys"][sealed["kid"]])
    suite = hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    try:
        plaintext = suite.decrypt(b64url(sealed["enc"]) + b64url(sealed["ct"]), private, info=info)
    except InvalidTag:
        raise Refused("seal-does-not-open") from None
    return {"valid": True, "payload": json.loads(plaintext)}


def check_receipt(case: dict[str, Any], vectors: dict[str, Any]) -> dict[str, Any]:
    broker = vectors["broker"]
    kid, obj, signing_input, signature = verify_jws(case["receipt"], TYP_RECEIPT)
    if kid != broker["kid"]:
        raise Refused("not-broker-key")
    public = Ed25519PublicKey.from_public_bytes(b64url(broker["public"]))
    check_signature(public, signature, signing_input)
    claims = canonical_claims(obj["payload"])
    envelope = case["envelope"]
    digest = "sha-256:" + b64url_encode(hashlib.sha256(rfc8785.dumps(envelope)).digest())
    envelope_id = json.loads(b64url(envelope["payload"]))["id"]
    if claims["envelope_digest"] != digest or claims["message_id"] != envelope_id:
        raise Refused("digest-mismatch")
    return {"valid": True}


_PARAMS = re.compile(r';([a-z]+)=("(?:[^"\\]|\\.)*"|-?\d+)')


def check_request(case: dict[str, Any], vectors: dict[str, Any]) -> dict[str, Any]:
    """RFC 9421 with our profile: one signature labelled trm covering @method,
    @target-uri and content-digest, with created, keyid, alg, nonce and tag."""
    now = parse_time(vectors["now"])
    window = timedelta(seconds=vectors["request_window_seconds"])
    request = case["request"]
    headers = {name.lower(): value for name, value in request["headers"]}
    body = b64url(request["body"])
    # 1. Signature-Input: trm=("@method" "@target-uri" "content-digest");params
    match = re.fullmatch(
        r'trm=\(([^)]*)\)((?:;[a-z]+=(?:"(?:[^"\\]|\\.)*"|-?\d+))*)', headers["signature-input"]
    )
    if match is None:
        raise Refused("malformed")
    components = match.group(1).split(" ")
    if components != ['"@method"', '"@target-uri"', '"content-digest"']:
        raise Refused("malformed")
    pairs = _PARAMS.findall(match.group(2))
    params = dict(pairs)
    # Exactly our parameters, each once: created, keyid, alg, nonce, tag.
    if len(pairs) != len(params) or set(params) != {"created", "keyid", "alg", "nonce", "tag"}:
        raise Refused("malformed")
    keyid = json.loads(params["keyid"])
    if json.loads(params["alg"]) != "ed25519" or json.loads(params["tag"]) != "trm-broker/v1":
        raise Refused("malformed")
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", json.loads(params["nonce"])):
        raise Refused("malformed")
    # 2. The key: registered, usable; 3. the time window.
    _, public = Registry(vectors["registry"]).signing_key(keyid, now)
    created = datetime.fromtimestamp(int(params["created"]), now.tzinfo)
    if not now - window <= created <= now + window:
        raise Refused("stale")
    # 4. The signature base (RFC 9421 §2.5), then the signature over it.
    base = "\n".join(
        [
            f'"@method": {request["method"]}',
            f'"@target-uri": {request["target_uri"]}',
            f'"content-digest": {headers["content-digest"]}',
            f'"@signature-params": ({match.group(1)}){match.group(2)}',
        ]
    ).encode()
    signature = re.fullmatch(r"trm=:([A-Za-z0-9+/=]+):", headers["signature"])
    if signature is None:
        raise Refused("malformed")
    check_signature(public, base64.b64decode(signature.group(1)), base)
    # 5. The signed digest must be the body's (RFC 9530).
    expected = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    if headers["content-digest"] != expected:
        raise Refused("digest-mismatch")
    return {"valid": True}


def check_acknowledgement(case: dict[str, Any], vectors: dict[str, Any]) -> dict[str, Any]:
    """A recipient's signed answer to an envelope, judged as the broker judges it when the
    answer arrives (at ``now``); refusals carry the broker's codes (``ack_*``)."""
    now = parse_time(vectors["now"])
    registry = Registry(vectors["registry"])
    envelope = case["envelope"]
    message = json.loads(b64url(envelope["payload"]))
    digest = "sha-256:" + b64url_encode(hashlib.sha256(rfc8785.dumps(envelope)).digest())
    # 1. JWS structure and header: EdDSA only, typ trm-ack+jws, a 64-byte signature.
    try:
        kid, obj, signing_input, signature = verify_jws(case["ack"], TYP_ACK)
        if not isinstance(kid, str) or len(signature) != 64:
            raise Refused("malformed")
    except (Refused, ValueError, KeyError, TypeError):
        raise Refused("ack_malformed") from None
    # 2. A signing key of the envelope's recipient; 3. usable now.
    entry = registry.keys.get(kid)
    if entry is None or entry["use"] != "sig" or entry["participant"] != message["recipient"]:
        raise Refused("ack_unknown_key")
    if not registry.usable(entry, now):
        raise Refused("ack_key_not_usable")
    # 4. The signature, then canonical claims.
    public = Ed25519PublicKey.from_public_bytes(b64url(entry["public"]))
    try:
        check_signature(public, signature, signing_input)
    except Refused:
        raise Refused("ack_bad_signature") from None
    try:
        claims = canonical_claims(obj["payload"])
    except (Refused, ValueError):
        raise Refused("ack_malformed") from None
    # 5. For exactly this message, these envelope bytes and this recipient.
    if (
        claims.get("message_id") != message["id"]
        or claims.get("envelope_digest") != digest
        or claims.get("recipient") != message["recipient"]
        or claims.get("status") not in ("received", "rejected")
    ):
        raise Refused("ack_mismatch")
    # 6. The schema (schemas/acknowledgement.v1.json): no other member; reasons (1 to 20
    #    strings of 1 to 200 characters) and a code in a rejection and only there (an
    #    answer may spell an absent one as [] or null).
    reasons = claims.get("reasons", [])
    rejected = claims["status"] == "rejected"
    if (
        set(claims) - {"reasons", "code"} != ACK_MEMBERS
        or claims["v"] != 1
        or not isinstance(claims["received_at"], str)
        or not isinstance(reasons, list)
        or len(reasons) > 20
        or not all(isinstance(r, str) and 1 <= len(r) <= 200 for r in reasons)
        or rejected != bool(reasons)
        or rejected != (claims.get("code") is not None)
        or (rejected and claims["code"] not in REJECTION_CODES)
    ):
        raise Refused("ack_malformed")
    found = {"valid": True, "status": claims["status"]}
    return {**found, "code": claims["code"]} if rejected else found


CHECKS = {
    "envelope": check_envelope,
    "receipt": check_receipt,
    "request": check_request,
    "acknowledgement": check_acknowledgement,
}


def verdict(case: dict[str, Any], vectors: dict[str, Any]) -> dict[str, Any]:
    try:
        return CHECKS[case["kind"]](case, vectors)
    except Refused as refused:
        return {"valid": False, "error": refused.code}
    except (ValueError, KeyError, TypeError):
        return {"valid": False, "error": "malformed"}


def main(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        vectors = json.load(handle)
    failures = 0
    for case in vectors["cases"]:
        got = verdict(case, vectors)
        expected = case["expect"]
        # A valid case may also name what a verifier finds (a payload, a status).
        agrees = got["valid"] == expected["valid"] and (
            got.get("error") == expected.get("error")
            if not expected["valid"]
            else all(got.get(name) == value for name, value in expected.items())
        )
        failures += not agrees
        shown = "valid" if got["valid"] else f"refused ({got['error']})"
        print(f"{'ok  ' if agrees else 'FAIL'} {case['name']}: {shown}")
    print(f"{len(vectors['cases']) - failures} of {len(vectors['cases'])} cases as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "vectors/vectors.json"))
