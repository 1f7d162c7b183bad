"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519, and the tlog-checkpoint note
text (https://c2sp.org/tlog-checkpoint) in which the ledger publishes its tree heads.

Key strings are those of golang.org/x/mod/sumdb/note, so auditors can use the Go tooling:
a verifier key is ``<name>+<hex key ID>+<base64(0x01 || public key)>``, a signer key is
``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trm_broker.crypto.errors import MalformedError, VerificationError
from trm_broker.crypto.keys import SigningKey, check_ed25519_public

_ED25519: Final = b"\x01"  # signed-note "Signature types": 0x01 is Ed25519
_SIGNATURE_PREFIX: Final = "\u2014 "  # signed-note "Format": em dash (U+2014), space
# signed-note "Format": verifiers must accept at least 16; sumdb/note stops at 100.
_MAX_SIGNATURES: Final = 100
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
# tlog-checkpoint "Note text" 2: ASCII decimal, no leading zeroes; at most 20 digits (uint64).
_TREE_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_MAX_TREE_SIZE: Final = 2**64 - 1


class NoteError(VerificationError):
    """A signed note, note key or checkpoint is malformed or does not verify."""


def _check_text(text: str, what: str) -> None:
    """signed-note "Format": valid UTF-8 with no ASCII control character but newline."""
    if _CONTROL.search(text):
        raise NoteError(f"{what} contains a control character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 encoding
        raise NoteError(f"{what} is not valid UTF-8") from exc


def _check_note_text(text: str) -> None:
    """signed-note "Format": the text ends in a newline."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_text(text, "note text")


def _check_name(name: str) -> None:
    """signed-note "Format": key names are non-empty, without Unicode spaces or plus."""
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise NoteError(f"invalid key name {name!r}")
    _check_text(name, "key name")


def _b64decode(data: str, what: str) -> bytes:
    """RFC 4648 §4 base64, padded; only the canonical form, so each value has one spelling."""
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as exc:  # binascii.Error, or a non-ASCII character
        raise NoteError(f"{what} is not base64") from exc
    if _b64encode(raw) != data:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_hash(name: str, public_key_raw: bytes) -> bytes:
    """signed-note "Ed25519 signatures": key ID = SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    _check_name(name)
    if len(public_key_raw) != 32:
        raise NoteError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key_raw).digest()[:4]


def _ed25519_key(encoded: str, what: str) -> bytes:
    """The 32 key bytes of ``base64(0x01 || key)``."""
    raw = _b64decode(encoded, what)
    if len(raw) != 33 or raw[:1] != _ED25519:
        raise NoteError(f"{what} is not an Ed25519 key (0x01 and 32 bytes)")
    return raw[1:]


@dataclass(frozen=True)
class NoteVerifier:
    """A public key that may sign notes, under its name and key ID."""

    name: str
    key_hash: bytes
    public_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        raw = self.public_key.public_bytes_raw()
        if self.key_hash != key_hash(self.name, raw):
            raise NoteError(f"key ID does not match the name {self.name!r} and key")
        try:
            check_ed25519_public(raw)  # a small-order key would verify forged signatures
        except MalformedError as exc:
            raise NoteError(str(exc)) from exc

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key ID>+<base64(0x01 || key)>``, checking the key ID."""
        # Names hold no '+', but base64 may: split from the left, as sumdb/note does.
        parts = vkey.split("+", 2)
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 key>")
        name, hex8, encoded = parts
        raw = _ed25519_key(encoded, "verifier key")
        return cls(name, bytes.fromhex(hex8), Ed25519PublicKey.from_public_bytes(raw))

    @classmethod
    def of(cls, name: str, public_key: Ed25519PublicKey) -> NoteVerifier:
        """The verifier of ``public_key``'s notes under ``name``."""
        return cls(name, key_hash(name, public_key.public_bytes_raw()), public_key)

    def vkey(self) -> str:
        raw = self.public_key.public_bytes_raw()
        return f"{self.name}+{self.key_hash.hex()}+{_b64encode(_ED25519 + raw)}"


@dataclass(frozen=True)
class NoteSigner:
    """A named Ed25519 key that signs notes."""

    name: str
    key: SigningKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse sumdb/note's ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _HEX8.fullmatch(parts[3]):
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<8 hex digits>+<base64 seed>")
        seed = _ed25519_key(parts[4], "signer key")
        signer = cls(parts[2], SigningKey(Ed25519PrivateKey.from_private_bytes(seed)))
        # The key ID names the public key, so it can only be checked once that is derived.
        if signer.verifier().key_hash != bytes.fromhex(parts[3]):
            raise NoteError("signer key ID does not match its name and key")
        return signer

    def _public_raw(self) -> bytes:
        return self.key.private.public_key().public_bytes_raw()

    def verifier(self) -> NoteVerifier:
        public_key = self.key.private.public_key()
        return NoteVerifier(self.name, key_hash(self.name, self._public_raw()), public_key)

    def sign(self, text: str) -> str:
        """The signed note: ``text``, a blank line, and one signature line."""
        _check_note_text(text)
        # signed-note "Signatures": base64(key ID || Ed25519 signature over the text).
        signature = key_hash(self.name, self._public_raw()) + self.key.sign(text.encode())
        return f"{text}\n{_SIGNATURE_PREFIX}{self.name} {_b64encode(signature)}\n"


def _index(verifiers: Sequence[NoteVerifier]) -> dict[tuple[str, bytes], NoteVerifier]:
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        other = known.setdefault((verifier.name, verifier.key_hash), verifier)
        if other.public_key.public_bytes_raw() != verifier.public_key.public_bytes_raw():
            raise NoteError(f"two verifier keys share the name {verifier.name!r} and key ID")
    return known


def open_note(note: str, verifiers: Sequence[NoteVerifier]) -> tuple[str, list[str]]:
    """Verify a signed note; return its text and the names of the known keys that signed it.

    Raises :class:`NoteError` if the note is malformed, if a known key's signature fails,
    or if no known key signed it.
    """
    # 1. Valid UTF-8, no control character but newline (signed-note "Format").
    _check_text(note, "note")
    # 2. The text ends at the last blank line, keeping its final newline; the signature
    #    block after it is one or more lines, each ending in a newline.
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("note has no signature block after a blank line")
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise NoteError(f"note has more than {_MAX_SIGNATURES} signatures")
    known, message = _index(verifiers), text.encode()
    verified: list[str] = []
    for line in lines:
        # 3. Each line is: em dash, space, key name, space, base64(key ID || signature).
        if not line.startswith(_SIGNATURE_PREFIX):
            raise NoteError("signature line does not start with an em dash and a space")
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        _check_name(name)
        signature = _b64decode(encoded, "signature")
        if len(signature) < 5:
            raise NoteError("signature is shorter than a key ID and one byte")
        # 4. Ignore signatures by unknown keys, even those sharing the name or the key ID
        #    of a known one (signed-note "Signatures"): other logs, witnesses, rotated keys.
        verifier = known.get((name, signature[:4]))
        if verifier is None:
            continue
        # 5. A known key's signature must verify; one that fails rejects the whole note.
        try:
            verifier.public_key.verify(signature[4:], message)
        except InvalidSignature as exc:
            raise NoteError(f"signature by {name!r} does not verify") from exc
        if name not in verified:
            verified.append(name)
    # 6. At least one known key must have signed.
    if not verified:
        raise NoteError("note is not signed by any known key")
    return text, verified


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and the RFC 9162 root hash at that size."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # tlog-checkpoint "Note text" 1 and 4: origin and extension lines are non-empty lines.
        for line in (self.origin, *self.extensions):
            if not line or "\n" in line:
                raise NoteError("checkpoint origin and extension lines must be non-empty lines")
            _check_text(line, "checkpoint line")
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise NoteError("checkpoint tree size must be between 0 and 2**64 - 1")
        if len(self.root) != 32:
            raise NoteError("checkpoint root hash must be 32 bytes (SHA-256)")

    def body(self) -> str:
        """The note text: origin, tree size, base64 root hash, extensions, one per line."""
        lines = (self.origin, str(self.size), _b64encode(self.root), *self.extensions)
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text (tlog-checkpoint "Note text"), keeping extensions."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint needs origin, tree size and root hash lines")
        origin, size, root, *extensions = lines
        if not _TREE_SIZE.fullmatch(size):
            raise NoteError("checkpoint tree size is not a decimal without leading zeroes")
        return cls(origin, int(size), _b64decode(root, "checkpoint root hash"), tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    return signer.sign(checkpoint.body())


def open_checkpoint(
    note: str, verifier: NoteVerifier | Sequence[NoteVerifier], origin: str | None = None
) -> Checkpoint:
    """Verify a checkpoint note signed by ``verifier`` (or by any of several: a broker's
    current and retired keys), parse it, and check its origin."""
    verifiers = [verifier] if isinstance(verifier, NoteVerifier) else list(verifier)
    text, _ = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
