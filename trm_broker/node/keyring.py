"""The private keys a node holds: per participant, the current key set (signs, and is the
one registered as current) and every encryption key still needed to open messages sealed
before a rotation, of either algorithm (X25519 or MLKEM768-X25519)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trm_broker.crypto.keys import AnyEncryptionKey, KeySet


@dataclass(frozen=True)
class Keyring:
    current: dict[str, KeySet]
    decryption: dict[tuple[str, str], AnyEncryptionKey]

    @classmethod
    def from_keysets(cls, keysets: Iterable[KeySet]) -> Keyring:
        """Later key sets of a participant replace earlier ones as current; all keep opening."""
        current: dict[str, KeySet] = {}
        decryption: dict[tuple[str, str], AnyEncryptionKey] = {}
        for keyset in keysets:
            current[keyset.participant] = keyset
            decryption[(keyset.participant, keyset.encryption.kid)] = keyset.encryption
        return cls(current, decryption)

    @classmethod
    def read(cls, paths: Iterable[Path]) -> Keyring:
        return cls.from_keysets(KeySet.read(path) for path in paths)

    def participants(self) -> list[str]:
        return sorted(self.current)

    def opener(self, participant: str, kid: str) -> AnyEncryptionKey | None:
        return self.decryption.get((participant, kid))
