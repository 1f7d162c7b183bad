"""What contracts/README.md says about sealing, proven on the committed vectors by a second
HPKE written from the specifications: RFC 9180's key schedule by hand, the KEMs from their
primitives (DHKEM(X25519) of RFC 9180 §4.1; X-Wing's combiner), and the AEAD opened with an
empty AAD. If the product sealed with another AAD, another ``info`` or another combiner
revision, these ciphertexts would not open here."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from trm_broker.crypto.encoding import b64url_decode

VECTORS = Path(__file__).resolve().parents[1] / "contracts" / "vectors" / "vectors.json"
KDF_HKDF_SHA256, AEAD_CHACHA20POLY1305 = 0x0001, 0x0003
KEM_X25519, KEM_MLKEM768_X25519 = 0x0020, 0x647A
#: X-Wing's label (draft-connolly-cfrg-xwing-kem-06), the last input of its combiner.
XWING_LABEL = b"\\./" + b"/^\\"
INFO_LABEL = b"trm-broker/v1 sealed payload\x00"


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)  # RFC 9180 §4


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return _expand(prk, n.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info, n)


def _dhkem_x25519_decap(enc: bytes, secret: bytes) -> bytes:
    """RFC 9180 §4.1 Decap for DHKEM(X25519, HKDF-SHA256)."""
    private = X25519PrivateKey.from_private_bytes(secret)
    dh = private.exchange(X25519PublicKey.from_public_bytes(enc))
    kem_context = enc + private.public_key().public_bytes_raw()
    suite_id = b"KEM" + KEM_X25519.to_bytes(2, "big")
    eae_prk = _labeled_extract(suite_id, b"", b"eae_prk", dh)
    return _labeled_expand(suite_id, eae_prk, b"shared_secret", kem_context, 32)


def _xwing_decap(enc: bytes, seed: bytes) -> bytes:
    """X-Wing Decapsulate (draft-connolly-cfrg-xwing-kem-06), the KEM draft-ietf-hpke-pq
    calls MLKEM768-X25519: the 32-byte seed expands by SHAKE256 into the ML-KEM-768 seed
    (d || z) and the X25519 key; ss = SHA3-256(ss_M || ss_X || ct_X || pk_X || label)."""
    expanded = hashlib.shake_256(seed).digest(96)
    mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    x25519 = X25519PrivateKey.from_private_bytes(expanded[64:])
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = mlkem.decapsulate(ct_m)
    ss_x = x25519.exchange(X25519PublicKey.from_public_bytes(ct_x))
    pk_x = x25519.public_key().public_bytes_raw()
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def _open(kem_id: int, shared_secret: bytes, info: bytes, ct: bytes, aad: bytes) -> bytes:
    """RFC 9180 §5.1 KeySchedule (mode_base, no PSK) then §5.2 Open at sequence 0."""
    suite_id = (
        b"HPKE"
        + kem_id.to_bytes(2, "big")
        + KDF_HKDF_SHA256.to_bytes(2, "big")
        + AEAD_CHACHA20POLY1305.to_bytes(2, "big")
    )
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    key = _labeled_expand(suite_id, secret, b"key", context, 32)
    base_nonce = _labeled_expand(suite_id, secret, b"base_nonce", context, 12)
    return ChaCha20Poly1305(key).decrypt(base_nonce, ct, aad)


def _valid_envelopes() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    return [
        (case["name"], case, vectors)
        for case in vectors["cases"]
        if case["kind"] == "envelope" and case["expect"]["valid"]
    ]


def _sealed_parts(case: dict[str, Any], vectors: dict[str, Any]) -> tuple[int, bytes, bytes, bytes]:
    claims = json.loads(b64url_decode(case["envelope"]["payload"]))
    sealed = claims["sealed"]
    enc, ct = b64url_decode(sealed["enc"]), b64url_decode(sealed["ct"])
    secret = b64url_decode(vectors["private_keys"][sealed["kid"]])
    binding = {k: claims[k] for k in ("case_ref", "id", "recipient", "sender", "type")}
    info = INFO_LABEL + rfc8785.dumps(binding)
    if sealed["suite"].startswith("MLKEM768-X25519/"):
        assert len(enc) == 1120
        return KEM_MLKEM768_X25519, _xwing_decap(enc, secret), info, ct
    assert len(enc) == 32
    return KEM_X25519, _dhkem_x25519_decap(enc, secret), info, ct


@pytest.mark.parametrize(
    ("name", "case", "vectors"), _valid_envelopes(), ids=[n for n, _, _ in _valid_envelopes()]
)
def test_the_payload_opens_by_the_readme_with_an_empty_aad(
    name: str, case: dict[str, Any], vectors: dict[str, Any]
) -> None:
    kem_id, shared_secret, info, ct = _sealed_parts(case, vectors)
    plaintext = _open(kem_id, shared_secret, info, ct, aad=b"")
    assert json.loads(plaintext) == case["expect"]["payload"]
    assert plaintext == rfc8785.dumps(case["expect"]["payload"])  # sealed as RFC 8785 JSON
    with pytest.raises(InvalidTag):  # any other AAD, e.g. the info again, does not open
        _open(kem_id, shared_secret, info, ct, aad=info)


def test_both_suites_are_covered_by_the_committed_vectors() -> None:
    names = {name for name, _, _ in _valid_envelopes()}
    assert {"envelope/valid-x25519", "envelope/valid-mlkem768-x25519"} <= names


def test_the_earlier_xwing_combiner_with_its_label_first_would_not_open() -> None:
    """Revisions before the label moved last derive another secret: pin the one we use."""
    (_, case, vectors) = next(c for c in _valid_envelopes() if "mlkem" in c[0])
    claims = json.loads(b64url_decode(case["envelope"]["payload"]))
    sealed = claims["sealed"]
    enc, seed = b64url_decode(sealed["enc"]), b64url_decode(vectors["private_keys"][sealed["kid"]])
    expanded = hashlib.shake_256(seed).digest(96)
    x25519 = X25519PrivateKey.from_private_bytes(expanded[64:])
    ss_m = MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).decapsulate(enc[:1088])
    ss_x = x25519.exchange(X25519PublicKey.from_public_bytes(enc[1088:]))
    pk_x = x25519.public_key().public_bytes_raw()
    label_first = hashlib.sha3_256(XWING_LABEL + ss_m + ss_x + enc[1088:] + pk_x).digest()
    _, _, info, ct = _sealed_parts(case, vectors)
    with pytest.raises(InvalidTag):
        _open(KEM_MLKEM768_X25519, label_first, info, ct, aad=b"")
