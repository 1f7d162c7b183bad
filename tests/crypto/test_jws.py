"""Flattened JWS with EdDSA: what is signed verifies, anything altered or confused is refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from trm_broker.crypto.errors import MalformedError, VerificationError
from trm_broker.crypto.jws import TYP_ACK, TYP_ENVELOPE, TYP_RECEIPT, digest, parse, sign, verify
from trm_broker.crypto.keys import SigningKey

CLAIMS: dict[str, Any] = {"v": 1, "id": "m-1", "case_ref": "NG-2025-0001", "n": [1, 2, 3]}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def flip_bit(text: str, byte: int = 0) -> str:
    data = bytearray(unb64url(text))
    data[byte] ^= 0x01
    return b64url(bytes(data))


def with_header(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> dict[str, str]:
    """A JWS with an arbitrary protected header, properly signed by ``key``."""
    protected = b64url(json.dumps(header, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    signature = key.sign(f"{protected}.{payload}".encode())
    return {"protected": protected, "payload": payload, "signature": b64url(signature)}


def check(obj: Any, key: SigningKey, typ: str = TYP_ENVELOPE) -> dict[str, Any]:
    parsed = parse(obj, typ)
    verify(parsed, key.private.public_key())
    return parsed.claims()


def test_round_trip() -> None:
    key = SigningKey.generate()
    obj = sign(CLAIMS, key, TYP_ENVELOPE)
    assert set(obj) == {"protected", "payload", "signature"}
    parsed = parse(obj, TYP_ENVELOPE)
    assert parsed.kid == key.kid
    assert parsed.typ == TYP_ENVELOPE
    verify(parsed, key.private.public_key())
    assert parsed.claims() == CLAIMS


def test_protected_header_names_alg_kid_and_typ() -> None:
    key = SigningKey.generate()
    header = json.loads(unb64url(sign(CLAIMS, key, TYP_RECEIPT)["protected"]))
    assert header == {"alg": "EdDSA", "kid": key.kid, "typ": TYP_RECEIPT}


def test_signatures_are_deterministic() -> None:
    key = SigningKey.generate()
    reordered = dict(reversed(CLAIMS.items()))
    assert sign(CLAIMS, key, TYP_ENVELOPE) == sign(reordered, key, TYP_ENVELOPE)


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256", "eddsa", None])
def test_other_algorithms_are_refused(alg: str | None) -> None:
    key = SigningKey.generate()
    header = {"kid": key.kid, "typ": TYP_ENVELOPE}
    if alg is not None:
        header["alg"] = alg
    with pytest.raises(VerificationError):
        parse(with_header(key, header, CLAIMS), TYP_ENVELOPE)


def test_alg_none_with_empty_signature_is_refused() -> None:
    key = SigningKey.generate()
    obj = with_header(key, {"alg": "none", "kid": key.kid, "typ": TYP_ENVELOPE}, CLAIMS)
    obj["signature"] = ""
    with pytest.raises(VerificationError):
        parse(obj, TYP_ENVELOPE)


def test_crit_header_is_refused() -> None:
    key = SigningKey.generate()
    header = {"alg": "EdDSA", "kid": key.kid, "typ": TYP_ENVELOPE, "crit": ["exp"], "exp": 1}
    with pytest.raises(VerificationError):
        parse(with_header(key, header, CLAIMS), TYP_ENVELOPE)


WRONG_TYP = [(TYP_RECEIPT, TYP_ENVELOPE), (TYP_ENVELOPE, TYP_RECEIPT), (TYP_ACK, TYP_ENVELOPE)]


@pytest.mark.parametrize(("signed_as", "presented_as"), WRONG_TYP)
def test_wrong_typ_is_refused(signed_as: str, presented_as: str) -> None:
    key = SigningKey.generate()
    with pytest.raises(VerificationError):
        parse(sign(CLAIMS, key, signed_as), presented_as)


def test_missing_kid_is_refused() -> None:
    key = SigningKey.generate()
    with pytest.raises(MalformedError):
        parse(with_header(key, {"alg": "EdDSA", "typ": TYP_ENVELOPE}, CLAIMS), TYP_ENVELOPE)


def test_unprotected_header_member_is_refused() -> None:
    key = SigningKey.generate()
    obj: dict[str, Any] = {**sign(CLAIMS, key, TYP_ENVELOPE), "header": {"kid": key.kid}}
    with pytest.raises(MalformedError):
        parse(obj, TYP_ENVELOPE)


@pytest.mark.parametrize("missing", ["protected", "payload", "signature"])
def test_missing_member_is_refused(missing: str) -> None:
    obj = sign(CLAIMS, SigningKey.generate(), TYP_ENVELOPE)
    del obj[missing]
    with pytest.raises(MalformedError):
        parse(obj, TYP_ENVELOPE)


@pytest.mark.parametrize("obj", [None, [], "a.b.c", {"protected": 1, "payload": 2, "signature": 3}])
def test_non_jws_values_are_refused(obj: Any) -> None:
    with pytest.raises(MalformedError):
        parse(obj, TYP_ENVELOPE)


@pytest.mark.parametrize("member", ["payload", "signature"])
@pytest.mark.parametrize("byte", [0, 5, -1])
def test_flipped_bit_is_refused(member: str, byte: int) -> None:
    key = SigningKey.generate()
    obj = sign(CLAIMS, key, TYP_ENVELOPE)
    obj[member] = flip_bit(obj[member], byte)
    with pytest.raises(VerificationError):
        check(obj, key)


def test_flipped_bit_in_protected_header_is_refused() -> None:
    key = SigningKey.generate()
    obj = sign(CLAIMS, key, TYP_ENVELOPE)
    # Flip a bit inside the kid value so the header still parses and names a kid.
    header = unb64url(obj["protected"])
    position = header.index(key.kid.encode()) + 3
    altered = bytearray(header)
    altered[position] ^= 0x01
    obj["protected"] = b64url(bytes(altered))
    with pytest.raises(VerificationError):
        check(obj, key)
    obj["protected"] = flip_bit(sign(CLAIMS, key, TYP_ENVELOPE)["protected"], 0)
    with pytest.raises(VerificationError):
        check(obj, key)


def test_signature_by_another_key_or_truncated_is_refused() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    forged = sign(CLAIMS, other, TYP_ENVELOPE)
    forged["protected"] = sign(CLAIMS, key, TYP_ENVELOPE)["protected"]  # claims to be ``key``
    with pytest.raises(VerificationError):
        check(forged, key)
    with pytest.raises(VerificationError):
        check(sign(CLAIMS, other, TYP_ENVELOPE), key)
    truncated = sign(CLAIMS, key, TYP_ENVELOPE)
    truncated["signature"] = b64url(unb64url(truncated["signature"])[:63])
    with pytest.raises(VerificationError):
        parse(truncated, TYP_ENVELOPE)


def test_signed_but_non_canonical_payload_is_refused() -> None:
    key = SigningKey.generate()
    obj = with_header(key, {"alg": "EdDSA", "kid": key.kid, "typ": TYP_ENVELOPE}, CLAIMS)
    obj["payload"] = b64url(b'{"v": 1}')  # valid JSON, validly signed, but not RFC 8785
    obj["signature"] = b64url(key.sign(f"{obj['protected']}.{obj['payload']}".encode()))
    parsed = parse(obj, TYP_ENVELOPE)
    verify(parsed, key.private.public_key())
    with pytest.raises(MalformedError):
        parsed.claims()


def test_payload_that_is_not_an_object_is_refused() -> None:
    key = SigningKey.generate()
    obj = with_header(key, {"alg": "EdDSA", "kid": key.kid, "typ": TYP_ENVELOPE}, CLAIMS)
    obj["payload"] = b64url(b"[1,2]")
    with pytest.raises(MalformedError):
        parse(obj, TYP_ENVELOPE).claims()


def test_digest_is_stable_under_member_reordering() -> None:
    obj = sign(CLAIMS, SigningKey.generate(), TYP_ENVELOPE)
    reordered = {name: obj[name] for name in ("signature", "payload", "protected")}
    assert list(reordered) != list(obj)
    assert digest(reordered) == digest(obj)
    assert digest(obj).startswith("sha-256:")


def test_digest_changes_with_any_member() -> None:
    key = SigningKey.generate()
    obj = sign(CLAIMS, key, TYP_ENVELOPE)
    other = sign({**CLAIMS, "id": "m-2"}, key, TYP_ENVELOPE)
    assert digest(obj) != digest(other)
    assert digest(obj) != digest({**obj, "signature": other["signature"]})


def test_protected_header_with_a_5000_digit_integer_is_refused_as_malformed() -> None:
    key = SigningKey.generate()
    obj = sign(CLAIMS, key, TYP_ENVELOPE)
    # json.loads raises ValueError (not JSONDecodeError) past 4300 integer digits.
    header = f'{{"alg":"EdDSA","kid":"{key.kid}","typ":"{TYP_ENVELOPE}","n":{"9" * 5000}}}'
    obj["protected"] = b64url(header.encode())
    with pytest.raises(MalformedError):
        parse(obj, TYP_ENVELOPE)


def test_payload_with_a_5000_digit_integer_is_refused_as_malformed() -> None:
    key = SigningKey.generate()
    protected = b64url(json.dumps({"alg": "EdDSA", "kid": key.kid, "typ": TYP_ENVELOPE}).encode())
    payload = b64url(b'{"n":' + b"9" * 5000 + b"}")
    signature = b64url(key.sign(f"{protected}.{payload}".encode()))
    parsed = parse(
        {"protected": protected, "payload": payload, "signature": signature}, TYP_ENVELOPE
    )
    verify(parsed, key.private.public_key())
    with pytest.raises(MalformedError):
        parsed.claims()
