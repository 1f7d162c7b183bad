"""The auditor's checks, for any tool: stream the entries, recompute every leaf and the root,
and compare with a signed checkpoint and with what this auditor verified before.

Memory stays O(log n) whatever the ledger's size: the tree is kept as its right edge
(:class:`~trm_broker.ledger.merkle.CompactRange`). What an earlier run verified is kept as
its checkpoint plus the leaf hashes it saw (a file of 32-byte hashes, read in step), so a
rewritten history is caught, and located, even if the operator re-signs it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.errors import VerificationError
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint


class LedgerFailure(VerificationError):
    """The ledger does not verify. ``index`` is the first entry found wrong, if one is."""

    def __init__(self, index: int | None, reason: str) -> None:
        where = f"at index {index}: " if index is not None else ""
        super().__init__(where + reason)
        self.index = index
        self.reason = reason


@dataclass(frozen=True)
class Earlier:
    """What an earlier run verified: its checkpoint and, in index order, its leaf hashes."""

    checkpoint: Checkpoint
    leaves: Iterator[bytes]


def entry_leaf(entry: dict[str, Any]) -> bytes:
    """A ledger entry's leaf hash: SHA-256(0x00 || RFC 8785 JSON of the entry)."""
    return merkle.leaf_hash(canonical_json(entry))


class LedgerVerifier:
    """Feed it every entry of the checkpoint's tree in index order, then call :meth:`finish`."""

    def __init__(self, checkpoint: Checkpoint, earlier: Earlier | None = None) -> None:
        if earlier is not None:
            if earlier.checkpoint.origin != checkpoint.origin:
                raise LedgerFailure(None, "the earlier checkpoint is of another ledger (origin)")
            if earlier.checkpoint.size > checkpoint.size:
                raise LedgerFailure(
                    checkpoint.size,
                    f"the tree shrank from {earlier.checkpoint.size} entries (verified "
                    f"earlier) to {checkpoint.size}: entries were removed",
                )
        self.checkpoint = checkpoint
        self._earlier = earlier
        self._tree = merkle.CompactRange()

    @property
    def size(self) -> int:
        return self._tree.size

    def add(self, index: int, entry: dict[str, Any], stored_leaf: bytes | None = None) -> bytes:
        """Check one entry; return its leaf hash.

        1. It is the next index (no entry missing, none reordered), inside the checkpoint.
        2. Its leaf is recomputed from its content; the broker's stored leaf must match it.
        3. Below the earlier checkpoint's size, the leaf must be the one verified then.
        4. At the earlier checkpoint's size, the recomputed root must be the earlier root
           (RFC 9162 consistency, by recomputation).
        """
        expected = self._tree.size
        if index != expected:
            what = "is missing" if index > expected else "is repeated or out of order"
            raise LedgerFailure(expected, f"entry {expected} {what} (got index {index})")
        if index >= self.checkpoint.size:
            raise LedgerFailure(index, "entry beyond the checkpoint's tree size")
        if not isinstance(entry, dict) or entry.get("v") != 1 or "type" not in entry:
            raise LedgerFailure(index, "the entry is not a ledger event (v 1, with a type)")
        leaf = entry_leaf(entry)
        if stored_leaf is not None and not hmac.compare_digest(stored_leaf, leaf):
            raise LedgerFailure(index, "the entry's content does not hash to the stored leaf")
        earlier = self._earlier
        if earlier is not None and index < earlier.checkpoint.size:
            seen = next(earlier.leaves, None)
            if seen is None:
                raise LedgerFailure(index, "the earlier run's leaf file ends too soon")
            if not hmac.compare_digest(seen, leaf):
                raise LedgerFailure(
                    index, "the entry differs from the one verified earlier (history rewritten)"
                )
        self._tree.append(leaf)
        if (
            earlier is not None
            and self._tree.size == earlier.checkpoint.size
            and not hmac.compare_digest(self._tree.root(), earlier.checkpoint.root)
        ):
            raise LedgerFailure(
                None,
                f"the first {earlier.checkpoint.size} entries no longer have the root "
                "verified earlier (history rewritten)",
            )
        return leaf

    def finish(self) -> bytes:
        """After the last entry: all of them were there, and their root is the checkpoint's."""
        if self._tree.size < self.checkpoint.size:
            raise LedgerFailure(
                self._tree.size,
                f"entries end at {self._tree.size}, the checkpoint covers "
                f"{self.checkpoint.size}: entries were removed",
            )
        root = self._tree.root()
        if not hmac.compare_digest(root, self.checkpoint.root):
            raise LedgerFailure(
                None, "the entries' root is not the checkpoint's: an entry was altered"
            )
        return root
