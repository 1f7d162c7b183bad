"""HPKE (RFC 9180) base-mode sealing of payloads to a recipient's encryption key.

The ``info`` string binds a ciphertext to its envelope's id, type, case reference, sender
and recipient (DESIGN.md §5): moved into any other envelope, it fails to open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.errors import MalformedError, SealError
from trm_broker.crypto.keys import EncryptionKey, load_x25519_public

SUITE_X25519 = "DHKEM-X25519-HKDF-SHA256/HKDF-SHA256/ChaCha20Poly1305"
_INFO_LABEL = b"trm-broker/v1 sealed payload\x00"

_SUITES = {
    SUITE_X25519: (hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
}


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


def seal(
    plaintext: bytes, recipient_kid: str, recipient_public_b64: str, binding: Binding
) -> dict[str, str]:
    """Seal ``plaintext`` to the recipient's X25519 key; returns the envelope's ``sealed``."""
    kem, kdf, aead = _SUITES[SUITE_X25519]
    suite = hpke.Suite(kem, kdf, aead)
    public = load_x25519_public(recipient_public_b64)
    blob = suite.encrypt(plaintext, public, info=binding.info())
    enc_len = kem.enc_length()
    return {
        "suite": SUITE_X25519,
        "kid": recipient_kid,
        "enc": b64url_encode(blob[:enc_len]),
        "ct": b64url_encode(blob[enc_len:]),
    }


def open_sealed(sealed: dict[str, Any], key: EncryptionKey, binding: Binding) -> bytes:
    """Open a ``sealed`` object with the recipient's private key, or raise :class:`SealError`."""
    suite_name = sealed.get("suite")
    if suite_name not in _SUITES:
        raise MalformedError("unsupported HPKE suite")
    if sealed.get("kid") != key.kid:
        raise SealError("payload is sealed to another key")
    kem, kdf, aead = _SUITES[suite_name]
    enc = b64url_decode(str(sealed.get("enc", "")))
    if len(enc) != kem.enc_length():
        raise MalformedError("HPKE enc has the wrong length")
    ct = b64url_decode(str(sealed.get("ct", "")))
    try:
        return hpke.Suite(kem, kdf, aead).decrypt(enc + ct, key.private, info=binding.info())
    except InvalidTag as exc:
        raise SealError("sealed payload does not open with this key and binding") from exc
