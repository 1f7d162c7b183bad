"""The auditor's checks, for any tool: stream the entries, recompute every leaf and the root,
and compare with a signed checkpoint and with what this auditor verified before.

Memory stays O(log n) whatever the ledger's size: the tree is kept as its right edge
(:class:`~trm_broker.ledger.merkle.CompactRange`). What an earlier run verified is kept as
its checkpoint plus the leaf hashes it saw (a file of 32-byte hashes, read in step), so a
rewritten history is caught, and located, even if the operator re-signs it.
"""

from __future__ import annotations

import gc
import hmac
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, compress, islice, repeat
from typing import Any

import orjson

from trm_broker.crypto.canonical import BELOW_4_BYTE_UTF8, ORJSON_CANONICAL, canonical_json
from trm_broker.crypto.errors import MalformedError, VerificationError
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


# orjson writes what it parsed as RFC 8785 does, keys sorted, except for three things, each
# sent to the RFC 8785 library: an integer beyond 2**53 - 1 (RFC 8785 refuses it; so does
# orjson with OPT_STRICT_INTEGER), a float (RFC 8785 writes ES6 number forms), and a
# character beyond the BMP (RFC 8785 sorts keys by UTF-16 code units).
_CANONICAL = ORJSON_CANONICAL


def _all_events(entries: list[Any]) -> bool:
    """``all(map(_is_event, entries))``, iterated in C."""
    if set(map(type, entries)) - {dict}:
        return False
    versions = list(map(dict.get, entries, repeat("v")))
    return versions.count(1) == len(entries) and all(
        map(dict.__contains__, entries, repeat("type"))
    )


def _holds_float(entries: list[Any]) -> bool:
    """Whether any value nested in ``entries`` is a float (iterated in C where it can be)."""
    values = list(chain.from_iterable(map(dict.values, entries)))
    while values:
        kinds = set(map(type, values))
        if float in kinds:
            return True
        lists = compress(values, map(isinstance, values, repeat(list))) if list in kinds else ()
        dicts = compress(values, map(isinstance, values, repeat(dict))) if dict in kinds else ()
        values = list(chain(chain.from_iterable(lists), *map(dict.values, dicts)))
    return False


def _is_event(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("v") == 1 and "type" in entry


def _entry_fault(body: bytes) -> str | None:
    """Why ``body`` is not a ledger event in RFC 8785 form (None: it is one), checked with
    the JSON and RFC 8785 libraries themselves."""
    try:
        entry = json.loads(body)
    except (ValueError, RecursionError):
        return "the entry is not JSON"
    if not _is_event(entry):
        return "the entry is not a ledger event (v 1, with a type)"
    try:
        canonical = canonical_json(entry)
    except MalformedError:
        canonical = b""
    if canonical != body:
        return "the entry's bytes are not its RFC 8785 canonical form"
    return None


def first_bad_entry(bodies: Sequence[bytes]) -> tuple[int, str] | None:
    """The first of ``bodies`` that is not a ledger event (v 1, with a type) in RFC 8785
    canonical form, and why; None if all are.

    Exact, and fast for a whole page: each body is parsed on its own (so each is exactly
    one JSON value), and the page passes at once when orjson writes the parsed values back,
    keys sorted, as exactly the page's bytes and none of them is where orjson and RFC 8785
    may differ (``_CANONICAL``). Otherwise every body is checked as :func:`_entry_fault`
    does, which also names the first wrong one."""
    if _page_is_canonical(bodies):
        return None
    for position, body in enumerate(bodies):
        fault = _entry_fault(body)
        if fault is not None:
            return position, fault
    return None


def _page_is_canonical(bodies: Sequence[bytes]) -> bool:
    joined = b",".join(bodies)
    if not joined.isascii() and joined.translate(None, BELOW_4_BYTE_UTF8):
        return False
    collecting = gc.isenabled()
    gc.disable()  # a page's thousands of new dicts hold no cycle: spare the collector
    try:
        entries = list(map(orjson.loads, bodies))
        return (
            _all_events(entries)
            and not _holds_float(entries)
            and orjson.dumps(entries, option=_CANONICAL) == b"[" + joined + b"]"
        )
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False
    finally:
        if collecting:
            gc.enable()


def _first_difference(a: Sequence[bytes], b: Sequence[bytes]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)


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
        self._check_earlier_root()
        return leaf

    def add_bodies(
        self, start: int, bodies: Sequence[bytes], stored: Sequence[bytes] | bytes | None = None
    ) -> list[bytes]:
        """Check the entries ``start``, ``start + 1``, ... given as their bytes (as the
        broker stores and hashes them), with the leaves the broker's tree holds for them if
        known (a list, or their concatenation); return their leaf hashes. The checks of
        :meth:`add` for each entry, a page at a time, and stricter about the bytes: each
        must be the RFC 8785 form of a ledger event, whose leaf is then the hash of those
        very bytes."""
        expected = self._tree.size
        if start != expected:
            what = "is missing" if start > expected else "is repeated or out of order"
            raise LedgerFailure(expected, f"entry {expected} {what} (got index {start})")
        size = merkle.HASH_SIZE
        held = stored if stored is None or isinstance(stored, bytes) else b"".join(stored)
        if held is not None and len(held) != size * len(bodies):
            raise ValueError("one stored leaf of 32 bytes for each entry")
        end = start + len(bodies)
        # Every check below an index is done before one at it, as entry by entry.
        for bound in (self._earlier_size(), self.checkpoint.size):
            if start < bound < end:
                cut = bound - start
                below, above = (
                    (None, None) if held is None else (held[: cut * size], held[cut * size :])
                )
                leaves = self.add_bodies(start, bodies[:cut], below)
                return leaves + self.add_bodies(bound, bodies[cut:], above)
        if bodies and start >= self.checkpoint.size:
            raise LedgerFailure(start, "entry beyond the checkpoint's tree size")
        leaves = merkle.leaf_hashes(bodies)
        joined = b"".join(leaves)
        faults = []
        bad = first_bad_entry(bodies)
        if bad is not None:
            faults.append(bad)
        if held is not None and not hmac.compare_digest(held, joined):
            differs = next(
                i for i in range(len(leaves)) if held[i * size : (i + 1) * size] != leaves[i]
            )
            faults.append((differs, "the entry's content does not hash to the stored leaf"))
        earlier = self._earlier
        if earlier is not None and start < earlier.checkpoint.size:
            seen = list(islice(earlier.leaves, len(leaves)))
            if not hmac.compare_digest(b"".join(seen), joined):
                if len(seen) < len(leaves) and seen == leaves[: len(seen)]:
                    faults.append((len(seen), "the earlier run's leaf file ends too soon"))
                else:
                    faults.append(
                        (
                            _first_difference(seen, leaves),
                            "the entry differs from the one verified earlier (history rewritten)",
                        )
                    )
        if faults:
            position, reason = min(faults, key=lambda fault: fault[0])  # stable: first kind
            raise LedgerFailure(start + position, reason)
        self._tree.extend(leaves)
        self._check_earlier_root()
        return leaves

    def _earlier_size(self) -> int:
        return self._earlier.checkpoint.size if self._earlier is not None else 0

    def _check_earlier_root(self) -> None:
        earlier = self._earlier
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
