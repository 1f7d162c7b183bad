"""Participant keys: Ed25519 for signatures, X25519 or ML-KEM-768+X25519 for HPKE, named by
RFC 7638 thumbprints.

A *key set* is what `trm-broker keys new` writes: one signing and one encryption key pair
for a participant. Its public half is what the operator registers with the broker.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeAlias

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, b64url_encode
from trm_broker.crypto.errors import MalformedError

SigningAlg = Literal["Ed25519"]
EncryptionAlg = Literal["X25519", "MLKEM768-X25519"]
#: Every encryption key algorithm, the default (classical X25519) first.
ENCRYPTION_ALGS: Final[tuple[EncryptionAlg, ...]] = ("X25519", "MLKEM768-X25519")

_MLKEM768_PUBLIC_LENGTH = 1184  # FIPS 203 §8, table 3: the ML-KEM-768 encapsulation key
_X25519_LENGTH = 32
#: draft-ietf-hpke-pq MLKEM768-X25519 (X-Wing): the ML-KEM-768 key, then the X25519 key.
HYBRID_PUBLIC_LENGTH: Final = _MLKEM768_PUBLIC_LENGTH + _X25519_LENGTH
_HYBRID_SEED_LENGTH = 32


def _raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(alg: str, public_raw: bytes) -> str:
    """RFC 7638 JWK thumbprint: SHA-256 over the canonical JSON of the key's required members.

    Ed25519 and X25519 keys are OKP JWKs (RFC 8037 §2: ``crv``, ``kty``, ``x``). The hybrid
    is an AKP JWK, the key type of the JOSE/COSE post-quantum drafts (``alg``, ``kty``,
    ``pub``), with ``alg`` "MLKEM768-X25519".
    """
    jwk: dict[str, str]
    if alg == "MLKEM768-X25519":
        jwk = {"alg": alg, "kty": "AKP", "pub": b64url_encode(public_raw)}
    else:
        jwk = {"crv": alg, "kty": "OKP", "x": b64url_encode(public_raw)}
    return b64url_encode(hashlib.sha256(canonical_json(jwk)).digest())


def load_ed25519_public(public_b64: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(b64url_decode(public_b64))
    except ValueError as exc:
        raise MalformedError("not a 32-byte Ed25519 public key") from exc


def load_x25519_public(public_b64: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(b64url_decode(public_b64))
    except ValueError as exc:
        raise MalformedError("not a 32-byte X25519 public key") from exc


# RFC 8032 §5.1: edwards25519 is -x^2 + y^2 = 1 + d x^2 y^2 over GF(p).
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _edwards_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Affine twisted-Edwards addition with a = -1 (complete: denominators never vanish)."""
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, -1, _P)
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P)
    return x3 % _P, y3 % _P


def check_ed25519_public(raw: bytes) -> None:
    """Refuse an Ed25519 public key that is not a canonical point of large order.

    A small-order key (such as the identity point) lets anyone forge signatures that
    verify for any message, so registration must never accept one.
    """
    if len(raw) != 32:
        raise MalformedError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    # RFC 8032 §5.1.3: decode y and the sign bit of x, then recover x.
    number = int.from_bytes(raw, "little")
    y, sign = number & ((1 << 255) - 1), number >> 255
    if y >= _P:
        raise MalformedError("Ed25519 public key is not canonically encoded (y >= p)")
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (v * x * x - u) % _P != 0:
        raise MalformedError("Ed25519 public key is not a point on the curve")
    if x == 0 and sign == 1:
        raise MalformedError("Ed25519 public key is not canonically encoded (x = 0, sign 1)")
    if x & 1 != sign:
        x = _P - x
    # Small order: 8·P is the identity exactly when P lies in the 8-torsion subgroup.
    point = (x, y)
    for _ in range(3):
        point = _edwards_add(point, point)
    if point == (0, 1):
        raise MalformedError("Ed25519 public key is a small-order point")


def check_x25519_public(raw: bytes) -> None:
    """Refuse an X25519 public key of low order: every exchange with it yields all zeros."""
    if len(raw) != _X25519_LENGTH:
        raise MalformedError(f"an X25519 public key is 32 bytes, not {len(raw)}")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as exc:
        # cryptography raises ValueError for a wrong length and for an all-zero secret.
        raise MalformedError("X25519 public key is a low-order point") from exc


def _hybrid_public(raw: bytes) -> hpke.MLKEM768X25519PublicKey:
    """Split and load an MLKEM768-X25519 public key, refusing what cannot be sealed to."""
    if len(raw) != HYBRID_PUBLIC_LENGTH:
        raise MalformedError(
            f"an MLKEM768-X25519 public key is {HYBRID_PUBLIC_LENGTH} bytes, not {len(raw)}"
        )
    # FIPS 203 §7.2 accepts t = 0, yet every ciphertext to it reveals its shared secret:
    # the hybrid would quietly be X25519 only.
    if not any(raw[: _MLKEM768_PUBLIC_LENGTH - 32]):
        raise MalformedError("the ML-KEM-768 key is degenerate (t = 0)")
    try:
        # OpenSSL runs the FIPS 203 §7.2 modulus check on import.
        mlkem = MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PUBLIC_LENGTH])
    except ValueError as exc:
        raise MalformedError("not a valid ML-KEM-768 encapsulation key") from exc
    # A low-order X25519 half would make sealing fail and leave the hybrid PQ-only.
    check_x25519_public(raw[_MLKEM768_PUBLIC_LENGTH:])
    x25519 = X25519PublicKey.from_public_bytes(raw[_MLKEM768_PUBLIC_LENGTH:])
    return hpke.MLKEM768X25519PublicKey(mlkem, x25519)


def check_encryption_public(alg: str, raw: bytes) -> None:
    """Refuse an encryption public key that is not a usable key of ``alg``."""
    if alg == "X25519":
        check_x25519_public(raw)
    elif alg == "MLKEM768-X25519":
        _hybrid_public(raw)
    else:
        raise MalformedError(f"unknown encryption key algorithm {alg!r}")


HPKEPublicKey: TypeAlias = X25519PublicKey | hpke.MLKEM768X25519PublicKey


def load_encryption_public(alg: str, public_b64: str) -> HPKEPublicKey:
    """A registered encryption key of ``alg``, checked as at registration, to seal to."""
    raw = b64url_decode(public_b64)
    if alg == "MLKEM768-X25519":
        return _hybrid_public(raw)
    check_encryption_public(alg, raw)
    return X25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its key id."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed_b64: str) -> SigningKey:
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(b64url_decode(seed_b64)))
        except ValueError as exc:
            raise MalformedError("not a 32-byte Ed25519 seed") from exc

    @property
    def public_b64(self) -> str:
        return b64url_encode(_raw_public(self.private.public_key()))

    @cached_property  # a thumbprint of the public key: computed once per key
    def kid(self) -> str:
        return key_id("Ed25519", _raw_public(self.private.public_key()))

    def seed_b64(self) -> str:
        return b64url_encode(
            self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        )

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


@dataclass(frozen=True)
class EncryptionKey:
    """An X25519 private key for opening HPKE-sealed payloads, with its key id."""

    alg: ClassVar[Literal["X25519"]] = "X25519"
    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_secret(cls, secret_b64: str) -> EncryptionKey:
        try:
            return cls(X25519PrivateKey.from_private_bytes(b64url_decode(secret_b64)))
        except ValueError as exc:
            raise MalformedError("not a 32-byte X25519 private key") from exc

    @property
    def public_b64(self) -> str:
        return b64url_encode(_raw_public(self.private.public_key()))

    @cached_property  # a thumbprint of the public key: computed once per key
    def kid(self) -> str:
        return key_id("X25519", _raw_public(self.private.public_key()))

    def secret_b64(self) -> str:
        return b64url_encode(
            self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        )

    def hpke_private(self) -> X25519PrivateKey:
        return self.private


@dataclass(frozen=True)
class HybridEncryptionKey:
    """An MLKEM768-X25519 (post-quantum hybrid) private key for opening HPKE-sealed payloads.

    Stored as the 32-byte seed of draft-ietf-hpke-pq (the X-Wing decapsulation key): SHAKE256
    expands it to the 64-byte ML-KEM-768 seed (d || z, FIPS 203) and the X25519 private key.
    """

    alg: ClassVar[Literal["MLKEM768-X25519"]] = "MLKEM768-X25519"
    seed: bytes = field(repr=False)
    _mlkem: MLKEM768PrivateKey = field(init=False, repr=False, compare=False)
    _x25519: X25519PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != _HYBRID_SEED_LENGTH:
            raise MalformedError("not a 32-byte MLKEM768-X25519 private key seed")
        expanded = hashlib.shake_256(self.seed).digest(64 + _X25519_LENGTH)
        object.__setattr__(self, "_mlkem", MLKEM768PrivateKey.from_seed_bytes(expanded[:64]))
        object.__setattr__(self, "_x25519", X25519PrivateKey.from_private_bytes(expanded[64:]))

    @classmethod
    def generate(cls) -> HybridEncryptionKey:
        return cls(os.urandom(_HYBRID_SEED_LENGTH))

    @classmethod
    def from_secret(cls, secret_b64: str) -> HybridEncryptionKey:
        return cls(b64url_decode(secret_b64))

    def _public_raw(self) -> bytes:
        return (
            self._mlkem.public_key().public_bytes_raw()
            + self._x25519.public_key().public_bytes_raw()
        )

    @property
    def public_b64(self) -> str:
        return b64url_encode(self._public_raw())

    @cached_property  # a thumbprint of the public key: computed once per key
    def kid(self) -> str:
        return key_id(self.alg, self._public_raw())

    def secret_b64(self) -> str:
        return b64url_encode(self.seed)

    def hpke_private(self) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(self._mlkem, self._x25519)


#: A participant's private encryption key, of either algorithm; ``alg`` tells which.
AnyEncryptionKey: TypeAlias = EncryptionKey | HybridEncryptionKey

_ENCRYPTION_KEY_TYPES: dict[str, type[EncryptionKey] | type[HybridEncryptionKey]] = {
    "X25519": EncryptionKey,
    "MLKEM768-X25519": HybridEncryptionKey,
}


def generate_encryption_key(alg: EncryptionAlg = "X25519") -> AnyEncryptionKey:
    return _ENCRYPTION_KEY_TYPES[alg].generate()


def encryption_key_from_secret(alg: str, secret_b64: str) -> AnyEncryptionKey:
    """The private key of ``alg`` from its stored form (as ``secret_b64()`` wrote it)."""
    key_type = _ENCRYPTION_KEY_TYPES.get(alg)
    if key_type is None:
        raise MalformedError(f"unknown encryption key algorithm {alg!r}")
    return key_type.from_secret(secret_b64)


@dataclass(frozen=True)
class KeySet:
    """A participant's private keys, as stored in its key file."""

    participant: str
    signing: SigningKey
    encryption: AnyEncryptionKey

    @classmethod
    def generate(cls, participant: str, encryption_alg: EncryptionAlg = "X25519") -> KeySet:
        return cls(participant, SigningKey.generate(), generate_encryption_key(encryption_alg))

    def public(self) -> dict[str, Any]:
        """The public half, in the form `POST /v1/participants` takes under ``keys``."""
        return {
            "signing": {
                "kid": self.signing.kid,
                "alg": "Ed25519",
                "public": self.signing.public_b64,
            },
            "encryption": {
                "kid": self.encryption.kid,
                "alg": self.encryption.alg,
                "public": self.encryption.public_b64,
            },
        }

    def to_json(self) -> dict[str, Any]:
        public = self.public()
        public["signing"]["private"] = self.signing.seed_b64()
        public["encryption"]["private"] = self.encryption.secret_b64()
        return {"participant": self.participant, **public}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySet:
        try:
            # Key files written before the hybrid existed all hold X25519 keys.
            encryption_alg = str(data["encryption"].get("alg", "X25519"))
            keyset = cls(
                participant=str(data["participant"]),
                signing=SigningKey.from_seed(data["signing"]["private"]),
                encryption=encryption_key_from_secret(
                    encryption_alg, data["encryption"]["private"]
                ),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise MalformedError("key file lacks participant, signing or encryption") from exc
        if data["signing"].get("kid") not in (None, keyset.signing.kid) or data["encryption"].get(
            "kid"
        ) not in (None, keyset.encryption.kid):
            raise MalformedError("key file's kid does not match its key")
        return keyset

    def write(self, path: Path) -> None:
        """Write the key file readable by its owner only, never overwriting an existing one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=2)
            handle.write("\n")

    @classmethod
    def read(cls, path: Path) -> KeySet:
        with path.open(encoding="utf-8") as handle:
            return cls.from_json(json.load(handle))
