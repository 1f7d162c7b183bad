"""JWS in flattened JSON serialisation (RFC 7515 §7.2.2) with EdDSA over Ed25519 (RFC 8037).

Every signed object of the exchange is one of these: envelopes, receipts,
acknowledgements and the operator's key statements. The protected header names the key
(``kid``) and the object kind (``typ``), so a receipt can never be replayed as an envelope.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trm_broker.crypto.canonical import canonical_json, parse_canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode, sha256_digest
from trm_broker.crypto.errors import Code, MalformedError, VerificationError
from trm_broker.crypto.keys import SigningKey

TYP_ENVELOPE = "trm-envelope+jws"
TYP_RECEIPT = "trm-receipt+jws"
TYP_ACK = "trm-ack+jws"
TYP_KEY_STATEMENT = "trm-key+jws"

_MEMBERS = {"protected", "payload", "signature"}


@dataclass(frozen=True)
class ParsedJws:
    """A structurally valid JWS whose signature has not been checked yet."""

    kid: str
    typ: str
    payload: bytes
    signing_input: bytes
    signature: bytes

    def claims(self) -> dict[str, Any]:
        """The payload as a JSON object; it must be RFC 8785 canonical."""
        value = parse_canonical_json(self.payload)
        if not isinstance(value, dict):
            raise MalformedError("JWS payload must be a JSON object")
        return value


def sign(claims: dict[str, Any], key: SigningKey, typ: str) -> dict[str, str]:
    """Sign the canonical JSON of ``claims``; returns the flattened JWS object."""
    header = {"alg": "EdDSA", "kid": key.kid, "typ": typ}
    protected = b64url_encode(canonical_json(header))
    payload = b64url_encode(canonical_json(claims))
    signing_input = f"{protected}.{payload}".encode("ascii")
    return {
        "protected": protected,
        "payload": payload,
        "signature": b64url_encode(key.sign(signing_input)),
    }


def parse(obj: Any, expected_typ: str) -> ParsedJws:
    """Check the JWS structure and protected header (RFC 7515 §5.2 steps 1-5).

    Refuses unprotected headers, any ``alg`` but EdDSA (so ``none`` and HMAC confusion are
    impossible), any ``crit`` (we understand no extensions), and the wrong ``typ``.
    """
    if not isinstance(obj, dict) or set(obj) != _MEMBERS:
        raise MalformedError("a JWS must be an object with exactly protected, payload, signature")
    if not all(isinstance(obj[name], str) for name in _MEMBERS):
        raise MalformedError("JWS members must be strings")
    try:
        header = json.loads(b64url_decode(obj["protected"]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers too long for int() (4300 digits).
        raise MalformedError("JWS protected header is not JSON") from exc
    if not isinstance(header, dict):
        raise MalformedError("JWS protected header must be an object")
    if header.get("alg") != "EdDSA":
        raise VerificationError("JWS alg must be EdDSA", code=Code.UNSUPPORTED_ALG)
    if "crit" in header:
        raise VerificationError("JWS crit extensions are not supported", code=Code.UNSUPPORTED_ALG)
    if header.get("typ") != expected_typ:
        raise VerificationError(f"JWS typ must be {expected_typ}", code=Code.WRONG_TYP)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedError("JWS protected header lacks kid")
    signature = b64url_decode(obj["signature"])
    if len(signature) != 64:
        raise VerificationError("Ed25519 signatures are 64 bytes", code=Code.BAD_SIGNATURE)
    return ParsedJws(
        kid=kid,
        typ=expected_typ,
        payload=b64url_decode(obj["payload"]),
        signing_input=f"{obj['protected']}.{obj['payload']}".encode("ascii"),
        signature=signature,
    )


def verify(parsed: ParsedJws, public_key: Ed25519PublicKey) -> None:
    """RFC 7515 §5.2 step 8: the signature over the signing input, with the named key."""
    try:
        public_key.verify(parsed.signature, parsed.signing_input)
    except InvalidSignature as exc:
        raise VerificationError("JWS signature does not verify", code=Code.BAD_SIGNATURE) from exc


def digest(obj: dict[str, str]) -> str:
    """The digest receipts and acknowledgements name: SHA-256 of the JWS object's RFC 8785 JSON."""
    return sha256_digest(canonical_json(obj))
