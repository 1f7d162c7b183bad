"""The private keys a node holds: per participant, the current key set (signs, and is the
one registered as current) and every encryption key still needed to open messages sealed
before a rotation, of either algorithm (X25519 or MLKEM768-X25519)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import AnyEncryptionKey, KeySet

if TYPE_CHECKING:
    from trm_broker.settings import Settings


@dataclass(frozen=True)
class Keyring:
    current: dict[str, KeySet]
    decryption: dict[tuple[str, str], AnyEncryptionKey]
    #: Participants the node serves whose keys this view leaves out (:meth:`only`).
    withheld: frozenset[str] = frozenset()

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
    def read(cls, paths: Iterable[Path], documents: str | None = None) -> Keyring:
        """Key files, then ``documents`` (a JSON array of key files' contents, as
        TRM_NODE_KEYS holds them): later ones of a participant become current."""
        keysets = [KeySet.read(path) for path in paths]
        if documents is not None:
            try:
                parsed = json.loads(documents)
                if not isinstance(parsed, list):
                    raise TypeError("not a JSON array")
                keysets += [KeySet.from_json(item) for item in parsed]
            except (ValueError, KeyError, TypeError) as exc:
                # Never the text itself: it holds private keys.
                raise MalformedError(
                    "TRM_NODE_KEYS is not a JSON array of key files' contents"
                ) from exc
        return cls.from_keysets(keysets)

    def only(self, participant: str) -> Keyring:
        """The keys of ``participant`` alone: what a user of that organisation acts with,
        so that no call of theirs can sign or open as another the node serves."""
        return Keyring(
            {p: k for p, k in self.current.items() if p == participant},
            {pk: k for pk, k in self.decryption.items() if pk[0] == participant},
            frozenset(self.current) - {participant},
        )

    def participants(self) -> list[str]:
        return sorted(self.current)

    def opener(self, participant: str, kid: str) -> AnyEncryptionKey | None:
        return self.decryption.get((participant, kid))


def load_keyring(settings: Settings) -> Keyring:
    documents = settings.node_keys.get_secret_value() if settings.node_keys else None
    if not settings.node_key_files and documents is None:
        raise SystemExit(
            "Set TRM_NODE_KEY_FILES (or TRM_NODE_KEYS) to the key files of the participants "
            "this node serves."
        )
    try:
        return Keyring.read(settings.node_key_files, documents)
    except MalformedError as exc:
        raise SystemExit(str(exc)) from None
