"""RFC 9162 Merkle tree hashes, proofs and their verification, over stored aligned subtrees.

The ledger keeps the hash of every complete aligned subtree: node (level L, index i) covers
leaves [i * 2**L, (i + 1) * 2**L), and level 0 holds the leaf hashes. Every subtree hash a root
or proof needs is a fold of O(log n) such nodes, so each ``*_nodes`` function lists the exact
nodes its partner reads, the caller fetches them in one query, and the partner computes from
that mapping. A partner raises ``KeyError`` only when the mapping lacks one of those nodes.

Verification reads no storage and raises :class:`ProofError` on every failure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence

from trm_broker.crypto.errors import VerificationError

HASH_SIZE = 32
Node = tuple[int, int]  # (level, index)
_Range = tuple[int, int]  # leaves [start, end)


class ProofError(VerificationError):
    """An inclusion or consistency proof, or the tree heads it is checked against, is wrong."""


def leaf_hash(data: bytes) -> bytes:
    # RFC 9162 §2.1.1: the 0x00 / 0x01 prefixes keep a leaf from passing as an inner node.
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()

_sha256 = hashlib.sha256


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """``[leaf_hash(e) for e in entries]``, inlined: the auditor's verifier hashes every
    entry of the ledger (issue 21)."""
    return [_sha256(b"\x00" + entry).digest() for entry in entries]


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """MTH of a complete subtree from its ``2**k`` leaf hashes (k >= 0), level by level."""
    if not hashes or len(hashes) & (len(hashes) - 1):
        raise ValueError(f"a complete subtree has 2**k leaves, got {len(hashes)}")
    level = list(hashes)
    while len(level) > 1:
        lefts, rights = level[0::2], level[1::2]
        level = [
            _sha256(b"\x01" + left + right).digest()
            for left, right in zip(lefts, rights, strict=True)
        ]
    return level[0]


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1): where §2.1.1 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash a range's nodes, left to right, into its MTH: node(h0, node(h1, ... hn))."""
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) by the recursion of RFC 9162 §2.1.1, over leaf hashes; O(n), for tests."""
    if len(leaf_hashes) <= 1:
        return leaf_hashes[0] if leaf_hashes else EMPTY_ROOT
    k = _split(len(leaf_hashes))
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


def subtree_nodes(start: int, end: int) -> list[Node]:
    """The maximal aligned complete subtrees making up [start, end), left to right.

    Only ranges that occur in the §2.1.1 recursion are accepted: start is a multiple of a power
    of two at least end - start, so MTH(D[start:end]) folds these nodes from the right.
    """
    if not 0 <= start < end:
        raise ValueError(f"need 0 <= start < end, got [{start}, {end})")
    size = end - start
    if start % (1 << (size - 1).bit_length()):
        raise ValueError(f"[{start}, {end}) is not a subtree of an RFC 9162 tree")
    nodes: list[Node] = []
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def range_root(start: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[start:end]) from the nodes listed by ``subtree_nodes(start, end)``."""
    return _fold([nodes[node] for node in subtree_nodes(start, end)])


def root_nodes(size: int) -> list[Node]:
    if size < 0:
        raise ValueError(f"tree size must not be negative, got {size}")
    return subtree_nodes(0, size) if size else []


def root_from_nodes(size: int, nodes: Mapping[Node, bytes]) -> bytes:
    return _fold([nodes[node] for node in root_nodes(size)]) if size else EMPTY_ROOT


def _nodes_of(ranges: Iterable[_Range]) -> list[Node]:
    return list(dict.fromkeys(node for start, end in ranges for node in subtree_nodes(start, end)))


def _inclusion_ranges(index: int, size: int) -> list[_Range]:
    """The subtrees whose hashes form PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf first."""
    if not 0 <= index < size:
        raise ValueError(f"need 0 <= index < size, got index {index}, size {size}")
    ranges: list[_Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            ranges.append((lo + k, hi))
            hi = lo + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            ranges.append((lo, lo + k))
            lo += k
    return ranges[::-1]


def inclusion_nodes(index: int, size: int) -> list[Node]:
    return _nodes_of(_inclusion_ranges(index, size))


def inclusion_proof(index: int, size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]) from the nodes ``inclusion_nodes`` lists."""
    return [range_root(start, end, nodes) for start, end in _inclusion_ranges(index, size)]


def _consistency_ranges(first: int, second: int) -> list[_Range]:
    """The subtrees whose hashes form PROOF(first, D[second]) (RFC 9162 §2.1.4.1)."""
    if not 0 <= first <= second:
        raise ValueError(f"need 0 <= first <= second, got {first}, {second}")
    if first in (0, second):
        return []
    ranges: list[_Range] = []
    lo, hi, whole = 0, second, True  # SUBPROOF(first - lo, D[lo:hi], whole)
    while first != hi:
        k = _split(hi - lo)
        if first <= lo + k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            ranges.append((lo + k, hi))
            hi = lo + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            ranges.append((lo, lo + k))
            lo, whole = lo + k, False
    if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}; with b true the client has it
        ranges.append((lo, hi))
    return ranges[::-1]


def consistency_nodes(first: int, second: int) -> list[Node]:
    return _nodes_of(_consistency_ranges(first, second))


def consistency_proof(first: int, second: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(first, D[second]); empty when first is 0 or equals second."""
    return [range_root(start, end, nodes) for start, end in _consistency_ranges(first, second)]


def _require_hashes(what: str, hashes: Iterable[bytes]) -> None:
    if not all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in hashes):
        raise ProofError(f"{what}: every hash must be {HASH_SIZE} bytes of SHA-256")


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)  # tree heads are public; constant time costs nothing


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` leaves with ``root``."""
    _require_hashes("leaf, root or inclusion proof", [leaf, root, *proof])
    # RFC 9162 §2.1.3.2, steps numbered as there.
    if not 0 <= index < size:  # 1. (a negative index fails too)
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn = index, size - 1  # 2.
    r = leaf  # 3.
    for p in proof:  # 4.
        if sn == 0:  # 4a.
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:  # 4b.
            r = node_hash(p, r)  # 4b.i.
            while not fn & 1 and fn != 0:  # 4b.ii.
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)  # 4b. otherwise, i.
        fn, sn = fn >> 1, sn >> 1  # 4c.
    if sn != 0:  # 5.
        raise ProofError("inclusion proof is shorter than the path to the root")
    if not _same(r, root):
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``second`` leaves extends the tree of ``first`` leaves.

    §2.1.4.2 covers 0 < first < second. Equal sizes need an empty proof and equal roots (the
    root of the empty tree is EMPTY_ROOT). first == 0 < second is rejected: every tree extends
    the empty one, so there is nothing to prove; a caller with no earlier head skips the check.
    """
    if not 0 <= first <= second:
        raise ProofError(f"tree size {second} is smaller than the earlier size {first}")
    if first == second:
        if proof:
            raise ProofError("consistency proof between equal tree sizes must be empty")
        if not _same(first_root, second_root) or (first == 0 and not _same(first_root, EMPTY_ROOT)):
            raise ProofError("root hashes differ for the same tree size")
        return
    if first == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    _require_hashes("roots or consistency proof", [first_root, second_root, *proof])
    # RFC 9162 §2.1.4.2, steps numbered as there.
    if not proof:  # 1.
        raise ProofError("consistency proof is empty")
    # 2. A first that is a power of 2 is a complete subtree, whose hash the client holds.
    path = [first_root, *proof] if first & (first - 1) == 0 else list(proof)
    fn, sn = first - 1, second - 1  # 3.
    while fn & 1:  # 4.
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # 5.
    for c in path[1:]:  # 6.
        if sn == 0:  # 6a.
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:  # 6b.
            fr, sr = node_hash(c, fr), node_hash(c, sr)  # 6b.i. and ii.
            while not fn & 1 and fn != 0:  # 6b.iii.
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)  # 6b. otherwise, i.
        fn, sn = fn >> 1, sn >> 1  # 6c.
    if sn != 0:  # 7.
        raise ProofError("consistency proof is shorter than the path to the root")
    if not (_same(fr, first_root) and _same(sr, second_root)):
        raise ProofError("consistency proof does not lead to both root hashes")


class CompactRange:
    """The right edge of a tree of `size` leaves: its root_nodes(size) hashes. O(log n) memory.

    Used both by the broker's sequencer (which stores every node it completes) and by the
    auditor's streaming verifier.
    """

    def __init__(self) -> None:
        self._size = 0
        self._edge: list[tuple[Node, bytes]] = []  # root_nodes(size), largest (leftmost) first

    @classmethod
    def from_nodes(cls, size: int, nodes: Mapping[Node, bytes]) -> CompactRange:
        """Resume at ``size`` leaves from the hashes of ``root_nodes(size)``."""
        compact = cls()
        compact._edge = [(node, nodes[node]) for node in root_nodes(size)]
        compact._size = size
        return compact

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[Node, bytes]]:
        """Add a leaf hash; return every node it completes, the leaf (level 0) first, upward."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, got {len(leaf)}")
        node, digest = (0, self._size), leaf
        completed = [(node, digest)]
        # A node with an odd index completes its parent with the left sibling on the edge.
        while node[1] & 1:
            _, left = self._edge.pop()
            node, digest = (node[0] + 1, node[1] >> 1), node_hash(left, digest)
            completed.append((node, digest))
        self._edge.append((node, digest))
        self._size += 1
        return completed

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Add many leaf hashes at once (what :meth:`append` does for each, without listing
        the nodes completed): each aligned run of ``2**k`` leaves is hashed level by level
        into its subtree's root, which joins the edge as one node."""
        if leaves and set(map(len, leaves)) != {HASH_SIZE}:
            raise ValueError(f"every leaf hash has {HASH_SIZE} bytes")
        done, total = 0, len(leaves)
        while done < total:
            level = (total - done).bit_length() - 1  # the largest run left ...
            if self._size:  # ... that starts where a subtree of its size may start
                level = min(level, (self._size & -self._size).bit_length() - 1)
            width = 1 << level
            self._push(level, perfect_root(leaves[done : done + width]))
            done += width

    def _push(self, level: int, digest: bytes) -> None:
        """Add the complete subtree (level, size >> level); size is a multiple of 2**level."""
        node = (level, self._size >> level)
        while node[1] & 1:
            _, left = self._edge.pop()
            node, digest = (node[0] + 1, node[1] >> 1), node_hash(left, digest)
        self._edge.append((node, digest))
        self._size += 1 << level

    def root(self) -> bytes:
        return _fold([digest for _, digest in self._edge]) if self._edge else EMPTY_ROOT

    def nodes(self) -> dict[Node, bytes]:
        return dict(self._edge)
