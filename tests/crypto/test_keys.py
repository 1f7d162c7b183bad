"""Key ids are RFC 7638 thumbprints; key files round-trip, stay private and never clobber."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
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
    HYBRID_PUBLIC_LENGTH,
    EncryptionKey,
    HybridEncryptionKey,
    KeySet,
    SigningKey,
    check_ed25519_public,
    check_encryption_public,
    check_x25519_public,
    encryption_key_from_secret,
    key_id,
    load_ed25519_public,
    load_encryption_public,
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


# --- MLKEM768-X25519 (post-quantum hybrid) encryption keys -------------------------------
# draft-connolly-cfrg-xwing-kem-08 Appendix C, first vector: the 32-byte decapsulation key
# (our stored private form) and its 1216-byte encapsulation key, ML-KEM-768 then X25519.
# draft-ietf-hpke-pq's MLKEM768-X25519 is X-Wing, so its keys serialize the same way.
XWING_SEED = "7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26"
XWING_PUBLIC = """
    e2236b35a8c24b39b10aa1323a96a919a2ced88400633a7b07131713fc14b2b5b19cfc3d
    a5fa1a92c49f25513e0fd30d6b1611c9ab9635d7086727a4b7d21d34244e66969cf15b3b
    2a785329f61b096b277ea037383479a6b556de7231fe4b7fa9c9ac24c0699a0018a52534
    01bacfa905ca816573e56a2d2e067e9b7287533ba13a937dedb31fa44baced4076992361
    0034ae31e619a170245199b3c5c39864859fe1b4c9717a07c30495bdfb98a0a002ccf56c
    1286cef5041dede3c44cf16bf562c7448518026b3d8b9940680abd38a1575fd27b58da06
    3bfac32c39c30869374c05c1aeb1898b6b303cc68be455346ee0af699636224a148ca2ae
    a10463111c709f69b69c70ce8538746698c4c60a9aef0030c7924ceec42a5d36816f545e
    ae13293460b3acb37ea0e13d70e4aa78686da398a8397c08eaf96882113fe4f7bad4da40
    b0501e1c753efe73053c87014e8661c33099afe8bede414a5b1aa27d8392b3e131e9a70c
    1055878240cad0f40d5fe3cdf85236ead97e2a97448363b2808caafd516cd25052c5c362
    543c2517e4acd0e60ec07163009b6425fc32277acee71c24bab53ed9f29e74c66a0a3564
    955998d76b96a9a8b50d1635a4d7a67eb42df5644d330457293a8042f53cc7a69288f17e
    d55827e82b28e82665a86a14fbd96645eca8172c044f83bc0d8c0b4c8626985631ca87af
    829068f1358963cb333664ca482763ba3b3bb208577f9ba6ac62c25f76592743b64be519
    317714cb4102cb7b2f9a25b2b4f0615de31decd9ca55026d6da0b65111b16fe52feed8a4
    87e144462a6dba93728f500b6ffc49e515569ef25fed17aff520507368253525860f58be
    3be61c964604a6ac814e6935596402a520a4670b3d284318866593d15a4bb01c35e3e587
    ee0c67d2880d6f2407fb7a70712b838deb96c5d7bf2b44bcf6038ccbe33fbcf51a54a584
    fe90083c91c7a6d43d4fb15f48c60c2fd66e0a8aad4ad64e5c42bb8877c0ebec2b5e387c
    8a988fdc23beb9e16c8757781e0a1499c61e138c21f216c29d076979871caa6942bafc09
    0544bee99b54b16cb9a9a364d6246d9f42cce53c66b59c45c8f9ae9299a75d15180c3c95
    2151a91b7a10772429dc4cbae6fcc622fa8018c63439f890630b9928db6bb7f9438ae406
    5ed34d73d486f3f52f90f0807dc88dfdd8c728e954f1ac35c06c000ce41a0582580e3bb5
    7b672972890ac5e7988e7850657116f1b57d0809aaedec0bede1ae148148311c6f7e3173
    46e5189fb8cd635b986f8c0bdd27641c584b778b3a911a80be1c9692ab8e1bbb12839573
    cce19df183b45835bbb55052f9fc66a1678ef2a36dea78411e6c8d60501b4e60592d1369
    8a943b509185db912e2ea10be06171236b327c71716094c964a68b03377f513a05bcd99c
    1f346583bb052977a10a12adfc758034e5617da4c1276585e5774e1f3b9978b09d0e9c44
    d3bc86151c43aad185712717340223ac381d21150a04294e97bb13bbda21b5a182b6da96
    9e19a7fd072737fa8e880a53c2428e3d049b7d2197405296ddb361912a7bcf4827ced611
    d0c7a7da104dde4322095339f64a61d5bb108ff0bf4d780cae509fb22c256914193ff734
    9042581237d522828824ee3bdfd07fb03f1f942d2ea179fe722f06cc03de5b69859edb06
    eff389b27dce59844570216223593d4ba32d9abac8cd049040ef6534
"""
# The key id this code has given XWING_PUBLIC since the hybrid was added: it must not change.
XWING_KID = "IKP0MzwFUuHvhVslddrQfWOJZbgWrNzvm_-Y7zzY5l4"


def xwing_public() -> bytes:
    return bytes.fromhex("".join(XWING_PUBLIC.split()))


def independent_akp_thumbprint(alg: str, pub: str) -> str:
    """RFC 7638 §3 over an AKP JWK (JOSE/COSE post-quantum drafts): alg, kty, pub."""
    jwk = json.dumps({"alg": alg, "kty": "AKP", "pub": pub}, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(jwk.encode("ascii")).digest())


def test_hybrid_key_from_the_xwing_vector_has_its_public_key_and_a_stable_kid() -> None:
    key = HybridEncryptionKey.from_secret(b64url(bytes.fromhex(XWING_SEED)))
    assert raw(key.public_b64) == xwing_public()
    assert len(xwing_public()) == HYBRID_PUBLIC_LENGTH
    assert key.kid == XWING_KID
    assert key.kid == independent_akp_thumbprint("MLKEM768-X25519", key.public_b64)
    assert key.kid == key_id("MLKEM768-X25519", xwing_public())
    assert key.secret_b64() == b64url(bytes.fromhex(XWING_SEED))


def test_x25519_kids_keep_the_okp_thumbprint() -> None:
    key = EncryptionKey.generate()
    assert key.alg == "X25519"
    assert key.kid == independent_thumbprint("X25519", key.public_b64)
    assert key.kid == key_id("X25519", raw(key.public_b64))


def test_the_same_public_bytes_get_different_kids_per_algorithm() -> None:
    public = raw(EncryptionKey.generate().public_b64)
    assert key_id("X25519", public) != key_id("MLKEM768-X25519", public)


def test_hybrid_key_repr_does_not_show_the_seed() -> None:
    key = HybridEncryptionKey.generate()
    assert key.secret_b64() not in repr(key)
    assert bytes.fromhex(XWING_SEED).hex() not in repr(
        HybridEncryptionKey(bytes.fromhex(XWING_SEED))
    )


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_hybrid_keys_round_trip_through_their_stored_form(seed: bytes) -> None:
    key = HybridEncryptionKey(seed)
    again = encryption_key_from_secret("MLKEM768-X25519", key.secret_b64())
    assert again == key
    assert (again.alg, again.kid, again.public_b64) == (key.alg, key.kid, key.public_b64)
    check_encryption_public("MLKEM768-X25519", raw(key.public_b64))


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_hybrid_seeds_of_the_wrong_length_are_refused(length: int) -> None:
    with pytest.raises(MalformedError):
        encryption_key_from_secret("MLKEM768-X25519", b64url(bytes(length)))


def test_an_unknown_encryption_algorithm_is_refused() -> None:
    with pytest.raises(MalformedError):
        encryption_key_from_secret("X448", EncryptionKey.generate().secret_b64())
    with pytest.raises(MalformedError):
        check_encryption_public("X448", bytes(56))


def test_hybrid_key_set_write_read_round_trip(tmp_path: Path) -> None:
    keyset = KeySet.generate("ng.naptip", encryption_alg="MLKEM768-X25519")
    assert isinstance(keyset.encryption, HybridEncryptionKey)
    path = tmp_path / "ng.naptip.json"
    keyset.write(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["encryption"] == {
        "alg": "MLKEM768-X25519",
        "kid": keyset.encryption.kid,
        "public": keyset.encryption.public_b64,
        "private": keyset.encryption.secret_b64(),
    }
    loaded = KeySet.read(path)
    assert loaded.public() == keyset.public()
    assert loaded.public()["encryption"]["alg"] == "MLKEM768-X25519"
    assert loaded.encryption.secret_b64() == keyset.encryption.secret_b64()
    assert keyset.encryption.secret_b64() not in json.dumps(keyset.public())


def test_a_key_file_without_an_encryption_alg_is_read_as_x25519(tmp_path: Path) -> None:
    keyset = KeySet.generate("ng.naptip")
    path = written(tmp_path, lambda doc: doc["encryption"].pop("alg"))
    loaded = KeySet.read(path)
    assert loaded.encryption.alg == "X25519"
    assert loaded.encryption.kid == independent_thumbprint("X25519", loaded.encryption.public_b64)
    assert keyset.public()["encryption"]["alg"] == "X25519"


def test_a_key_file_whose_alg_does_not_match_its_private_key_is_refused(tmp_path: Path) -> None:
    # An X25519 secret is also 32 bytes; read as a hybrid seed, it gives another kid.
    path = written(tmp_path, lambda doc: doc["encryption"].update(alg="MLKEM768-X25519"))
    with pytest.raises(MalformedError):
        KeySet.read(path)
    path.unlink()
    path = written(tmp_path, lambda doc: doc["encryption"].update(alg="X448"))
    with pytest.raises(MalformedError):
        KeySet.read(path)


def test_generated_hybrid_public_keys_are_accepted_and_load() -> None:
    for _ in range(10):
        key = HybridEncryptionKey.generate()
        check_encryption_public("MLKEM768-X25519", raw(key.public_b64))
        assert load_encryption_public("MLKEM768-X25519", key.public_b64) is not None


@pytest.mark.parametrize(
    "length", [0, 32, 1184, HYBRID_PUBLIC_LENGTH - 1, HYBRID_PUBLIC_LENGTH + 1]
)
def test_hybrid_public_keys_of_the_wrong_length_are_refused(length: int) -> None:
    with pytest.raises(MalformedError, match="1216 bytes"):
        check_encryption_public("MLKEM768-X25519", bytes(length))
    with pytest.raises(MalformedError):
        load_encryption_public("MLKEM768-X25519", b64url(bytes(length)))


def test_a_hybrid_public_key_whose_ml_kem_half_fails_the_modulus_check_is_refused() -> None:
    # FIPS 203 §7.2: every 12-bit coefficient must be below q = 3329; 0xfff is not.
    public = bytes([0xFF]) * 1184 + xwing_public()[1184:]
    with pytest.raises(MalformedError, match="ML-KEM-768"):
        check_encryption_public("MLKEM768-X25519", public)


def test_a_hybrid_public_key_with_a_low_order_x25519_half_is_refused() -> None:
    for low_order in low_order_x25519_inputs():
        public = xwing_public()[:1184] + low_order
        with pytest.raises(MalformedError, match="low-order"):
            check_encryption_public("MLKEM768-X25519", public)


def test_x25519_checks_by_alg_keep_the_low_order_and_length_checks() -> None:
    check_encryption_public("X25519", raw(EncryptionKey.generate().public_b64))
    for public in low_order_x25519_inputs():
        with pytest.raises(MalformedError, match="low-order"):
            check_encryption_public("X25519", public)
    for length in (0, 31, 33, HYBRID_PUBLIC_LENGTH):
        with pytest.raises(MalformedError, match="32 bytes"):
            check_encryption_public("X25519", bytes(length))
    with pytest.raises(MalformedError):
        # A hybrid key registered as X25519 is refused, not truncated.
        load_encryption_public("X25519", b64url(xwing_public()))


def test_a_hybrid_public_key_whose_ml_kem_half_is_degenerate_is_refused() -> None:
    # t = 0 passes the FIPS 203 modulus check, yet reveals every shared secret sealed to it.
    genuine = xwing_public()
    degenerate = bytes(1152) + genuine[1152:]
    with pytest.raises(MalformedError, match="degenerate"):
        check_encryption_public("MLKEM768-X25519", degenerate)
    check_encryption_public("MLKEM768-X25519", genuine)
