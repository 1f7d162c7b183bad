"""The committed vectors file is encoded exactly as contracts/README.md ("The vectors file")
says, checked from the specifications rather than with this package's own decoders."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

VECTORS = Path(__file__).resolve().parents[1] / "contracts" / "vectors" / "vectors.json"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
PUBLIC_LENGTH = {"Ed25519": 32, "X25519": 32, "MLKEM768-X25519": 1184 + 32}


def _vectors() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return result


def b64url(text: str) -> bytes:
    """RFC 4648 §5 without padding, and the one spelling of its bytes."""
    assert re.fullmatch(r"[A-Za-z0-9_-]*", text), text
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text
    return raw


def thumbprint(alg: str, public: bytes) -> str:
    """RFC 7638 over the OKP (RFC 8037) or AKP JWK, as the README names keys."""
    encoded = base64.urlsafe_b64encode(public).rstrip(b"=").decode()
    jwk = (
        {"alg": alg, "kty": "AKP", "pub": encoded}
        if alg == "MLKEM768-X25519"
        else {"crv": alg, "kty": "OKP", "x": encoded}
    )
    digest = hashlib.sha256(rfc8785.dumps(jwk)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_of(alg: str, private: bytes) -> bytes:
    """The public key the README says a private key of ``alg`` gives."""
    if alg == "Ed25519":  # the RFC 8032 32-byte private key (seed)
        return Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    if alg == "X25519":  # the RFC 7748 scalar
        return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    expanded = hashlib.shake_256(private).digest(96)  # the X-Wing seed
    mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key().public_bytes_raw()
    return (
        mlkem + X25519PrivateKey.from_private_bytes(expanded[64:]).public_key().public_bytes_raw()
    )


def test_keys_are_raw_bytes_in_unpadded_base64url_named_by_their_thumbprints() -> None:
    vectors = _vectors()
    keys = [*vectors["registry"], {**vectors["broker"], "use": "sig"}]
    assert set(vectors["private_keys"]) == {key["kid"] for key in keys}
    for key in keys:
        public = b64url(key["public"])
        assert len(public) == PUBLIC_LENGTH[key["alg"]]
        assert key["use"] == ("sig" if key["alg"] == "Ed25519" else "enc")
        assert key["kid"] == thumbprint(key["alg"], public)
        private = b64url(vectors["private_keys"][key["kid"]])
        assert len(private) == 32
        assert public_of(key["alg"], private) == public
    for entry in vectors["registry"]:
        for name in ("valid_from", "valid_until", "revoked_at"):
            assert entry[name] is None or RFC3339_UTC.fullmatch(entry[name])
    assert RFC3339_UTC.fullmatch(vectors["now"])
    assert isinstance(vectors["request_window_seconds"], int)


def test_signed_objects_requests_and_verdicts_are_encoded_as_documented() -> None:
    for case in _vectors()["cases"]:
        assert case["kind"] in ("envelope", "receipt", "request", "acknowledgement")
        for member in ("envelope", "receipt", "ack"):
            if member in case:
                obj = case[member]
                assert set(obj) == {"protected", "payload", "signature"}
                if case["name"] != "envelope/padded-standard-base64-signature":
                    json.loads(b64url(obj["protected"]))
                    b64url(obj["payload"])  # JSON bytes, but for one flipped bit
                    assert len(b64url(obj["signature"])) in (0, 64)  # empty: `alg: none`
        if case["kind"] == "request":
            request = case["request"]
            assert request["target_uri"].startswith("https://")
            assert all(
                len(pair) == 2 and all(isinstance(p, str) for p in pair)
                for pair in request["headers"]
            )
            headers = {name.lower(): value for name, value in request["headers"]}
            body = b64url(request["body"])  # the exact bytes sent
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()  # standard, padded
            if case["name"] != "request/body-changed":
                assert headers["content-digest"] == f"sha-256=:{digest}:"
            assert re.fullmatch(r"trm=:[A-Za-z0-9+/]+={0,2}:", headers["signature"])
        expect = case["expect"]
        assert isinstance(expect["valid"], bool)
        assert ("error" in expect) == (not expect["valid"])
        extra = set(expect) - {"valid", "error"}
        assert extra <= {"payload", "status", "code"}
        if "payload" in expect:  # the opened payload, as JSON
            assert case["kind"] == "envelope"
            assert isinstance(expect["payload"], dict)
        if "status" in expect:
            assert case["kind"] == "acknowledgement"
            assert expect["status"] in ("received", "rejected")
        if "code" in expect:  # why the node rejected it
            assert expect.get("status") == "rejected"
            assert expect["code"] in ("payload-invalid", "header-payload-mismatch")


def test_now_is_after_every_key_became_valid() -> None:
    vectors = _vectors()
    now = datetime.fromisoformat(vectors["now"])
    assert all(datetime.fromisoformat(k["valid_from"]) < now for k in vectors["registry"])
