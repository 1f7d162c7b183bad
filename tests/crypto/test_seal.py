"""HPKE sealing: only the recipient opens a payload, and only in the envelope it was sealed for."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trm_broker.crypto.errors import CryptoError, MalformedError, SealError
from trm_broker.crypto.keys import AnyEncryptionKey, EncryptionKey, HybridEncryptionKey
from trm_broker.crypto.seal import (
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    Binding,
    open_sealed,
    seal,
    suite_for,
)
from trm_broker.domain.envelope import Sealed

RECIPIENT = EncryptionKey.generate()
HYBRID = HybridEncryptionKey.generate()
FIELDS = ("id", "type", "case_ref", "sender", "recipient")

bindings = st.builds(Binding, st.text(), st.text(), st.text(), st.text(), st.text())


def binding(**changes: str) -> Binding:
    base = Binding(
        id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        type="referral",
        case_ref="NG-2025-0001",
        sender="ng.naptip",
        recipient="gb.nrm",
    )
    return dataclasses.replace(base, **changes)


def seal_to(plaintext: bytes, bound: Binding, key: EncryptionKey = RECIPIENT) -> dict[str, str]:
    return seal(plaintext, key.kid, key.public_b64, bound)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def flip_bit(text: str, bit: int) -> str:
    data = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return b64url(bytes(data))


@settings(max_examples=50)
@given(st.binary(max_size=2048), bindings)
def test_round_trip(plaintext: bytes, bound: Binding) -> None:
    sealed = seal_to(plaintext, bound)
    assert sealed["suite"] == SUITE_X25519
    assert sealed["kid"] == RECIPIENT.kid
    assert open_sealed(sealed, RECIPIENT, bound) == plaintext


@settings(max_examples=50)
@given(st.binary(max_size=256), bindings, st.sampled_from(FIELDS), st.text())
def test_any_changed_binding_field_fails(
    plaintext: bytes, bound: Binding, field: str, new_value: str
) -> None:
    if getattr(bound, field) == new_value:
        new_value += "x"
    sealed = seal_to(plaintext, bound)
    with pytest.raises(SealError):
        open_sealed(sealed, RECIPIENT, dataclasses.replace(bound, **{field: new_value}))


@pytest.mark.parametrize("field", FIELDS)
def test_each_binding_field_is_bound(field: str) -> None:
    sealed = seal_to(b"identification summary", binding())
    changed = binding(**{field: getattr(binding(), field) + "1"})
    with pytest.raises(SealError):
        open_sealed(sealed, RECIPIENT, changed)


def test_binding_fields_cannot_be_shifted_between_each_other() -> None:
    sealed = seal_to(b"p", binding(case_ref="ab", sender="c.d"))
    with pytest.raises(SealError):
        open_sealed(sealed, RECIPIENT, binding(case_ref="a", sender="bc.d"))


def test_sealing_is_randomised() -> None:
    first, second = seal_to(b"same", binding()), seal_to(b"same", binding())
    assert first["enc"] != second["enc"]
    assert first["ct"] != second["ct"]


def test_another_recipients_key_cannot_open() -> None:
    other = EncryptionKey.generate()
    sealed = seal_to(b"secret", binding())
    with pytest.raises(SealError):
        open_sealed(sealed, other, binding())
    # Even if the kid is rewritten to name the other key, the ciphertext does not open.
    with pytest.raises(SealError):
        open_sealed({**sealed, "kid": other.kid}, other, binding())


@settings(max_examples=30)
@given(st.integers(min_value=0, max_value=8 * 64 - 1))
def test_flipped_bit_in_ct_fails(bit: int) -> None:
    sealed = seal_to(b"some sealed referral payload", binding())
    with pytest.raises(SealError):
        open_sealed({**sealed, "ct": flip_bit(sealed["ct"], bit)}, RECIPIENT, binding())


@settings(max_examples=30)
@given(st.integers(min_value=0, max_value=8 * 32 - 1))
def test_flipped_bit_in_enc_fails(bit: int) -> None:
    sealed = seal_to(b"some sealed referral payload", binding())
    with pytest.raises(SealError):
        open_sealed({**sealed, "enc": flip_bit(sealed["enc"], bit)}, RECIPIENT, binding())


def test_truncated_or_empty_ct_fails() -> None:
    sealed = seal_to(b"payload", binding())
    ct = base64.urlsafe_b64decode(sealed["ct"] + "=" * (-len(sealed["ct"]) % 4))
    for altered in (b"", ct[:-1], ct[:16], ct + b"\x00"):
        with pytest.raises(SealError):
            open_sealed({**sealed, "ct": b64url(altered)}, RECIPIENT, binding())


def test_sealed_object_moved_into_another_envelope_fails() -> None:
    original = binding()
    sealed = seal_to(b"identification summary", original)
    # Same parties and case, a later message: the copied ``sealed`` must not open there.
    later = binding(id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", type="risk_assessment")
    with pytest.raises(SealError):
        open_sealed(sealed, RECIPIENT, later)
    # Re-addressed to a third party who holds the same key (e.g. a shared node): still refused.
    with pytest.raises(SealError):
        open_sealed(sealed, RECIPIENT, binding(recipient="fr.ocrteh"))
    assert open_sealed(sealed, RECIPIENT, original) == b"identification summary"


@pytest.mark.parametrize(
    "change",
    [
        {"suite": "DHKEM-P256-HKDF-SHA256/HKDF-SHA256/AES-128-GCM"},
        {"enc": "AAAA"},
        {"enc": "not base64!"},
        {"ct": "Zg=="},
    ],
)
def test_malformed_sealed_objects_are_refused(change: dict[str, Any]) -> None:
    sealed = seal_to(b"payload", binding())
    with pytest.raises(CryptoError):
        open_sealed({**sealed, **change}, RECIPIENT, binding())


# --- MLKEM768-X25519: the post-quantum hybrid suite, for recipients with a hybrid key -----


def seal_hybrid(plaintext: bytes, bound: Binding, key: AnyEncryptionKey = HYBRID) -> dict[str, str]:
    return seal(plaintext, key.kid, key.public_b64, bound, alg=key.alg)


def decoded_length(text: str) -> int:
    return len(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=2048), bindings)
def test_hybrid_round_trip(plaintext: bytes, bound: Binding) -> None:
    sealed = seal_hybrid(plaintext, bound)
    assert sealed["suite"] == SUITE_MLKEM768_X25519
    assert sealed["kid"] == HYBRID.kid
    assert decoded_length(sealed["enc"]) == 1120  # ML-KEM-768 ciphertext, then X25519 share
    assert open_sealed(sealed, HYBRID, bound) == plaintext


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=256), bindings, st.sampled_from(FIELDS), st.text())
def test_hybrid_any_changed_binding_field_fails(
    plaintext: bytes, bound: Binding, field: str, new_value: str
) -> None:
    if getattr(bound, field) == new_value:
        new_value += "x"
    sealed = seal_hybrid(plaintext, bound)
    with pytest.raises(SealError):
        open_sealed(sealed, HYBRID, dataclasses.replace(bound, **{field: new_value}))


def test_hybrid_sealed_object_moved_into_another_envelope_fails() -> None:
    original = binding()
    sealed = seal_hybrid(b"identification summary", original)
    later = binding(id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", type="risk_assessment")
    with pytest.raises(SealError):
        open_sealed(sealed, HYBRID, later)
    with pytest.raises(SealError):
        open_sealed(sealed, HYBRID, binding(recipient="fr.ocrteh"))
    assert open_sealed(sealed, HYBRID, original) == b"identification summary"


def test_the_suite_follows_the_recipient_keys_alg() -> None:
    assert seal_hybrid(b"p", binding(), RECIPIENT)["suite"] == SUITE_X25519
    assert seal_hybrid(b"p", binding(), HYBRID)["suite"] == SUITE_MLKEM768_X25519
    assert (suite_for("X25519"), suite_for("MLKEM768-X25519")) == (
        SUITE_X25519,
        SUITE_MLKEM768_X25519,
    )
    with pytest.raises(MalformedError):
        suite_for("X448")
    # Both are suites the envelope schema accepts.
    for key in (RECIPIENT, HYBRID):
        assert Sealed.model_validate(seal_hybrid(b"p", binding(), key)).kid == key.kid


@pytest.mark.parametrize(
    ("sealed_to", "opened_with"),
    [(HYBRID, RECIPIENT), (RECIPIENT, HYBRID)],
    ids=["hybrid-opened-with-x25519", "x25519-opened-with-hybrid"],
)
def test_a_payload_does_not_open_with_a_key_of_the_other_algorithm(
    sealed_to: AnyEncryptionKey, opened_with: AnyEncryptionKey
) -> None:
    sealed = seal_hybrid(b"secret", binding(), sealed_to)
    with pytest.raises(SealError):
        open_sealed(sealed, opened_with, binding())
    # Rewritten to name the other key, the suite still does not fit that key.
    with pytest.raises(SealError, match="not for a"):
        open_sealed({**sealed, "kid": opened_with.kid}, opened_with, binding())


@pytest.mark.parametrize("key", [RECIPIENT, HYBRID], ids=["x25519", "hybrid"])
def test_a_suite_swapped_for_the_other_one_is_refused(key: AnyEncryptionKey) -> None:
    sealed = seal_hybrid(b"secret", binding(), key)
    other = SUITE_X25519 if sealed["suite"] == SUITE_MLKEM768_X25519 else SUITE_MLKEM768_X25519
    with pytest.raises(SealError):
        open_sealed({**sealed, "suite": other}, key, binding())


@pytest.mark.parametrize("key", [RECIPIENT, HYBRID], ids=["x25519", "hybrid"])
def test_an_enc_of_the_other_suites_length_is_refused(key: AnyEncryptionKey) -> None:
    sealed = seal_hybrid(b"secret", binding(), key)
    wrong = 1120 if key.alg == "X25519" else 32
    with pytest.raises(MalformedError, match="enc"):
        open_sealed({**sealed, "enc": b64url(bytes(wrong))}, key, binding())


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=8 * 1120 - 1))
def test_hybrid_flipped_bit_in_enc_fails(bit: int) -> None:
    # Either half: ML-KEM decapsulation rejects implicitly, X25519 gives another secret.
    sealed = seal_hybrid(b"some sealed referral payload", binding())
    with pytest.raises(SealError):
        open_sealed({**sealed, "enc": flip_bit(sealed["enc"], bit)}, HYBRID, binding())


def test_sealing_to_a_key_of_the_wrong_length_or_an_unknown_alg_is_refused() -> None:
    with pytest.raises(MalformedError):
        seal(b"p", HYBRID.kid, RECIPIENT.public_b64, binding(), alg="MLKEM768-X25519")
    with pytest.raises(MalformedError):
        seal(b"p", RECIPIENT.kid, HYBRID.public_b64, binding(), alg="X25519")
    with pytest.raises(MalformedError):
        seal(b"p", RECIPIENT.kid, RECIPIENT.public_b64, binding(), alg="X448")
    # A low-order X25519 key (alone, or as the hybrid's second half) is never sealed to.
    with pytest.raises(MalformedError):
        seal(b"p", RECIPIENT.kid, b64url(bytes(32)), binding())
    hybrid_public = base64.urlsafe_b64decode(HYBRID.public_b64 + "==")
    weak_hybrid = b64url(hybrid_public[:1184] + bytes(32))
    with pytest.raises(MalformedError):
        seal(b"p", HYBRID.kid, weak_hybrid, binding(), alg="MLKEM768-X25519")
