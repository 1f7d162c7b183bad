"""Key ids are RFC 7638 thumbprints; key files round-trip, stay private and never clobber."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import (
    EncryptionKey,
    KeySet,
    SigningKey,
    check_ed25519_public,
    check_x25519_public,
    key_id,
    load_ed25519_public,
    load_or_create_signing_key,
    load_x25519_public,
)

# RFC 8037 Appendix A: the Ed25519 key pair and (A.3) its RFC 7638 thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def independent_thumbprint(crv: str, x: str) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, without whitespace."""
    jwk = json.dumps({"crv": crv, "kty": "OKP", "x": x}, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(jwk.encode("ascii")).digest())


def test_independent_thumbprint_matches_rfc_8037_a3() -> None:
    assert independent_thumbprint("Ed25519", RFC8037_X) == RFC8037_THUMBPRINT


def test_key_id_is_the_rfc_8037_a3_thumbprint() -> None:
    assert key_id("Ed25519", raw(RFC8037_X)) == RFC8037_THUMBPRINT


def test_signing_key_from_rfc_seed_has_rfc_public_key_and_kid() -> None:
    key = SigningKey.from_seed(RFC8037_D)
    assert key.public_b64 == RFC8037_X
    assert key.kid == RFC8037_THUMBPRINT
    assert key.seed_b64() == RFC8037_D


def test_generated_key_ids_match_an_independent_thumbprint() -> None:
    keyset = KeySet.generate("ng.naptip")
    assert keyset.signing.kid == independent_thumbprint("Ed25519", keyset.signing.public_b64)
    assert keyset.encryption.kid == independent_thumbprint("X25519", keyset.encryption.public_b64)
    assert keyset.signing.kid != keyset.encryption.kid


def test_public_half_holds_no_private_material() -> None:
    keyset = KeySet.generate("ng.naptip")
    public = keyset.public()
    text = json.dumps(public)
    assert keyset.signing.seed_b64() not in text
    assert keyset.encryption.secret_b64() not in text
    assert public["signing"] == {
        "kid": keyset.signing.kid,
        "alg": "Ed25519",
        "public": keyset.signing.public_b64,
    }
    assert public["encryption"]["alg"] == "X25519"


def test_key_set_write_read_round_trip(tmp_path: Path) -> None:
    keyset = KeySet.generate("ng.naptip")
    path = tmp_path / "keys" / "ng.naptip.json"
    keyset.write(path)
    loaded = KeySet.read(path)
    assert loaded.participant == "ng.naptip"
    assert loaded.public() == keyset.public()
    assert loaded.signing.seed_b64() == keyset.signing.seed_b64()
    assert loaded.encryption.secret_b64() == keyset.encryption.secret_b64()


def test_written_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    KeySet.generate("ng.naptip").write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    first = KeySet.generate("ng.naptip")
    first.write(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        KeySet.generate("ng.naptip").write(path)
    assert path.read_bytes() == before
    assert KeySet.read(path).public() == first.public()


def written(tmp_path: Path, mutate: Any) -> Path:
    path = tmp_path / "k.json"
    document = KeySet.generate("ng.naptip").to_json()
    mutate(document)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_key_file_whose_signing_kid_does_not_match_is_refused(tmp_path: Path) -> None:
    other = SigningKey.generate().kid
    path = written(tmp_path, lambda doc: doc["signing"].update(kid=other))
    with pytest.raises(MalformedError):
        KeySet.read(path)


def test_key_file_whose_encryption_kid_does_not_match_is_refused(tmp_path: Path) -> None:
    other = EncryptionKey.generate().kid
    path = written(tmp_path, lambda doc: doc["encryption"].update(kid=other))
    with pytest.raises(MalformedError):
        KeySet.read(path)


def test_key_file_with_swapped_private_key_is_refused(tmp_path: Path) -> None:
    seed = SigningKey.generate().seed_b64()
    path = written(tmp_path, lambda doc: doc["signing"].update(private=seed))
    with pytest.raises(MalformedError):
        KeySet.read(path)


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"participant": "x", "signing": "nope", "encryption": {}},
        {"participant": "x", "signing": {"private": "AAAA"}, "encryption": {"private": "AAAA"}},
        {"participant": "x", "signing": {"private": 7}, "encryption": {"private": 7}},
    ],
)
def test_malformed_key_documents_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        KeySet.from_json(document)


def test_public_key_loaders_refuse_wrong_lengths() -> None:
    key = Ed25519PrivateKey.generate()
    assert load_ed25519_public(SigningKey(key).public_b64) is not None
    for text in ["", b64url(bytes(31)), b64url(bytes(33))]:
        with pytest.raises(MalformedError):
            load_ed25519_public(text)
        with pytest.raises(MalformedError):
            load_x25519_public(text)


# --- Weak public keys -------------------------------------------------------------------
# An independent, deliberately plain model of edwards25519 (RFC 8032 §5.1) to derive the
# small-order points from first principles instead of trusting a list of magic bytes.

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
# RFC 8032 §5.1: the order of the prime-order subgroup; the whole group has order 8·L.
L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = (0, 1)

Point = tuple[int, int]


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2
    return (
        (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P,
    )


def multiply(k: int, point: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = add(result, point)
        point, k = add(point, point), k >> 1
    return result


def decode(y: int, sign: int = 0) -> Point | None:
    """The point with this y and x of this parity, or None when -x^2 + y^2 = 1 + d x^2 y^2
    has no solution x."""
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if x * x % P != x2:
        x = x * SQRT_M1 % P
    if x * x % P != x2:
        return None
    return (P - x if x & 1 != sign else x), y


def encode(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def order(point: Point) -> int:
    """The order of a point known to be in the 8-torsion."""
    return next(n for n in (1, 2, 4, 8) if multiply(n, point) == IDENTITY)


@cache
def torsion() -> list[Point]:
    """All eight points of order dividing 8, as the multiples of one point of order 8.

    L·Q lands in the 8-torsion for any curve point Q; walk y = 2, 3, ... until it has
    order 8. Its multiples k·T, k = 0..7, are then the whole (cyclic) 8-torsion subgroup.
    """
    for y in range(2, 1000):
        q = decode(y)
        if q is not None and order(t := multiply(L, q)) == 8:
            return [multiply(k, t) for k in range(8)]
    raise AssertionError("no point of order 8 found")


def test_the_derived_torsion_is_the_expected_one() -> None:
    points = torsion()
    assert len(set(points)) == 8
    assert [order(p) for p in points] == [1, 8, 4, 8, 2, 8, 4, 8]
    assert points[0] == IDENTITY  # y = 1
    assert points[4] == (0, P - 1)  # order 2: y = p - 1
    assert {points[2], points[6]} == {(SQRT_M1, 0), (P - SQRT_M1, 0)}  # order 4: y = 0


@pytest.mark.parametrize("k", range(8))
def test_small_order_ed25519_keys_are_refused(k: int) -> None:
    point = torsion()[k]
    with pytest.raises(MalformedError, match="small-order"):
        check_ed25519_public(encode(point))


def test_the_identity_point_key_is_refused() -> None:
    # The key a reviewer forged signatures with: 0x01 then 31 zero bytes.
    assert encode(IDENTITY) == bytes([1]) + bytes(31)
    with pytest.raises(MalformedError):
        check_ed25519_public(bytes([1]) + bytes(31))


@pytest.mark.parametrize("y", [1, P - 1], ids=["identity", "order-2"])
def test_x_zero_with_the_sign_bit_set_is_refused(y: int) -> None:
    with pytest.raises(MalformedError, match="canonical"):
        check_ed25519_public((y | 1 << 255).to_bytes(32, "little"))


@pytest.mark.parametrize("y", [P, P + 1, 2**255 - 1], ids=["p", "p+1", "2^255-1"])
def test_non_canonical_y_is_refused(y: int) -> None:
    with pytest.raises(MalformedError, match="canonical"):
        check_ed25519_public(y.to_bytes(32, "little"))


def test_a_y_with_no_point_on_the_curve_is_refused() -> None:
    y = next(y for y in range(2, 1000) if decode(y) is None)
    with pytest.raises(MalformedError, match="not a point"):
        check_ed25519_public(y.to_bytes(32, "little"))


@pytest.mark.parametrize("length", [0, 31, 33])
def test_ed25519_keys_of_the_wrong_length_are_refused(length: int) -> None:
    with pytest.raises(MalformedError):
        check_ed25519_public(bytes(length))


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_generated_ed25519_keys_are_accepted(seed: bytes) -> None:
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(seed))
    public = raw(key.public_b64)
    check_ed25519_public(public)
    # The independent model agrees: the key is a point of the prime-order subgroup.
    number = int.from_bytes(public, "little")
    point = decode(number & ((1 << 255) - 1), number >> 255)
    assert point is not None
    assert encode(point) == public
    assert multiply(L, point) == IDENTITY


def montgomery_u(point: Point) -> int:
    """RFC 7748 §4.1: the birational map from edwards25519 to curve25519, u = (1+y)/(1-y)."""
    _, y = point
    return (1 + y) * pow(1 - y, -1, P) % P


def low_order_x25519_inputs() -> list[bytes]:
    # The images of the 8-torsion (the identity has none: it maps to the point at infinity).
    us = sorted({montgomery_u(point) for point in torsion()[1:]})
    assert us[:2] == [0, 1]
    assert len(us) == 4
    return [u.to_bytes(32, "little") for u in us]


def test_all_zero_and_u_1_x25519_keys_are_refused() -> None:
    for public in [bytes(32), (1).to_bytes(32, "little")]:
        with pytest.raises(MalformedError, match="low-order"):
            check_x25519_public(public)


def test_every_low_order_x25519_key_is_refused() -> None:
    for public in low_order_x25519_inputs():
        with pytest.raises(MalformedError, match="low-order"):
            check_x25519_public(public)


def test_generated_x25519_keys_are_accepted() -> None:
    for _ in range(50):
        check_x25519_public(raw(EncryptionKey(X25519PrivateKey.generate()).public_b64))


# --- The broker's own key file ----------------------------------------------------------


def test_broker_key_file_is_created_private_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "state" / "broker-key.json"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text(encoding="utf-8"))["signing"]["kid"] == key.kid
    again = load_or_create_signing_key(path)
    assert again.seed_b64() == key.seed_b64()
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_broker_key_file_created_by_eight_threads_at_once_is_one_key(tmp_path: Path) -> None:
    for attempt in range(10):
        path = tmp_path / str(attempt) / "broker-key.json"
        start = threading.Barrier(8)

        def create(path: Path = path, start: threading.Barrier = start) -> str:
            start.wait()
            return load_or_create_signing_key(path).kid

        with ThreadPoolExecutor(max_workers=8) as pool:
            kids = list(pool.map(lambda _: create(), range(8)))
        assert len(set(kids)) == 1
        assert load_or_create_signing_key(path).kid == kids[0]
        assert os.listdir(path.parent) == [path.name]


def test_a_broken_broker_key_file_is_refused_as_malformed(tmp_path: Path) -> None:
    path = tmp_path / "broker-key.json"
    path.write_text("", encoding="utf-8")
    with pytest.raises(MalformedError):
        load_or_create_signing_key(path)
