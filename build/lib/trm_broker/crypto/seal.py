"""HPKE (RFC 9180) base-mode sealing of payloads to a recipient's encryption key.

The ``info`` string binds a ciphertext to its envelope's id, type, case reference, sender
and recipient (docs/design.md §5): moved into any other envelope, it fails to open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.errors import MalformedError, SealError
from trm_broker.crypto.keys import AnyEncryptionKey, load_encryption_public

SUITE_X25519 = "DHKEM-X25519-HKDF-SHA256/HKDF-SHA256/ChaCha20Poly1305"
#: draft-ietf-hpke-pq KEM MLKEM768-X25519 (0x647A); KDF and AEAD as for the classical suite.
SUITE_MLKEM768_X25519 = "MLKEM768-X25519/HKDF-SHA256/ChaCha20Poly1305"
_INFO_LABEL = b"trm-broker/v1 sealed payload\x00"


@dataclass(frozen=True)
class _Suite:
    key_alg: str
    kem: hpke.KEM

    def hpke_suite(self) -> hpke.Suite:
        return hpke.Suite(self.kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


_SUITES = {
    SUITE_X25519: _Suite("X25519", hpke.KEM.X25519),
    SUITE_MLKEM768_X25519: _Suite("MLKEM768-X25519", hpke.KEM.MLKEM768_X25519),
}
#: The suite a payload is sealed with follows the recipient's encryption key algorithm.
_SUITE_FOR_ALG = {suite.key_alg: name for name, suite in _SUITES.items()}


@dataclass(frozen=True)
class Binding:
    """The envelope facts a ciphertext is bound to."""

    id: str
    type: str
    case_ref: str
    sender: str
    recipient: str

    def info(self) -> bytes:
        fields = {
            "id": self.id,
            "type": self.type,
            "case_ref": self.case_ref,
            "sender": self.sender,
            "recipient": self.recipient,
        }
        return _INFO_LABEL + canonical_json(fields)


def suite_for(alg: str) -> str:
    """The name of the suite payloads to an encryption key of ``alg`` are sealed with."""
    suite_name = _SUITE_FOR_ALG.get(alg)
    if suite_name is None:
        raise MalformedError(f"no HPKE suite for encryption keys of algorithm {alg!r}")
    return suite_name


def seal(
    plaintext: bytes,
    recipient_kid: str,
    recipient_public_b64: str,
    binding: Binding,
    alg: str = "X25519",
) -> dict[str, str]:
    """Seal ``plaintext`` to the recipient's encryption key of algorithm ``alg`` (X25519 or
    MLKEM768-X25519), with the matching suite; returns the envelope's ``sealed``."""
    suite_name = suite_for(alg)
    suite = _SUITES[suite_name]
    public = load_encryption_public(alg, recipient_public_b64)
    blob = suite.hpke_suite().encrypt(plaintext, public, info=binding.info())
    enc_len = suite.kem.enc_length()
    return {
        "suite": suite_name,
        "kid": recipient_kid,
        "enc": b64url_encode(blob[:enc_len]),
        "ct": b64url_encode(blob[enc_len:]),
    }


def open_sealed(sealed: dict[str, Any], key: AnyEncryptionKey, binding: Binding) -> bytes:
    """Open a ``sealed`` object with the recipient's private key, or raise :class:`SealError`
    (:class:`MalformedError` for an unknown suite or an ``enc`` of the wrong length)."""
    suite_name = sealed.get("suite")
    suite = _SUITES.get(suite_name) if isinstance(suite_name, str) else None
    if suite is None:
        raise MalformedError("unsupported HPKE suite")
    if sealed.get("kid") != key.kid:
        raise SealError("payload is sealed to another key")
    if suite.key_alg != key.alg:
        # Names this key but a suite of another KEM: it cannot have been sealed to it.
        raise SealError(f"payload is sealed with {suite_name}, not for a {key.alg} key")
    enc = b64url_decode(str(sealed.get("enc", "")))
    if len(enc) != suite.kem.enc_length():
        raise MalformedError("HPKE enc has the wrong length")
    ct = b64url_decode(str(sealed.get("ct", "")))
    try:
        return suite.hpke_suite().decrypt(enc + ct, key.hpke_private(), info=binding.info())
    except InvalidTag as exc:
        raise SealError("sealed payload does not open with this key and binding") from exc
