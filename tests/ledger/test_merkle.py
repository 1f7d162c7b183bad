"""RFC 9162 Merkle tree: transparency-dev vectors, known roots, and properties against MTH."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trm_broker.crypto.errors import VerificationError
from trm_broker.ledger import merkle
from trm_broker.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    Node,
    ProofError,
    consistency_nodes,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_root,
    root_from_nodes,
    root_nodes,
    root_of,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "merkle-proofs"

# The RFC 6962 test tree of transparency-dev/merkle, and its roots for sizes 1 to 8.
TEST_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
TEST_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# Numbered folders hold cases built on the test tree; "additional" and "single-entry" do not.
TEST_TREE_FOLDERS = {"0", "1", "2", "3", "4"}


def _cases(kind: str) -> list[Any]:
    folder = VECTORS / kind
    if not folder.is_dir():  # an explicit failing case: an empty list would only skip
        return [pytest.param(None, id=f"{kind}-vectors-missing")]
    paths = sorted(folder.rglob("*.json"))
    return [pytest.param(path, id=str(path.relative_to(folder))) for path in paths]


def _load(path: Path | None) -> dict[str, Any]:
    assert path is not None, f"Merkle proof vectors not found at {VECTORS}"
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(element) for element in case["proof"] or []]


def _expect(case: dict[str, Any], check: Callable[[], None]) -> None:
    if case["wantErr"]:
        with pytest.raises(ProofError):  # any other exception type fails the test
            check()
    else:
        check()


def tree_nodes(leaves: Sequence[bytes]) -> dict[Node, bytes]:
    """Every complete aligned subtree hash, as the broker's sequencer stores them."""
    compact, nodes = CompactRange(), dict[Node, bytes]()
    for leaf in leaves:
        nodes.update(compact.append(leaf))
    return nodes


def only(nodes: dict[Node, bytes], wanted: list[Node]) -> dict[Node, bytes]:
    return {node: nodes[node] for node in wanted}


def flip(proof: list[bytes], element: int, position: int, mask: int) -> list[bytes]:
    changed = bytearray(proof[element])
    changed[position % HASH_SIZE] ^= mask
    return [*proof[:element], bytes(changed), *proof[element + 1 :]]


def max_nodes(size: int) -> int:
    return 2 * math.floor(math.log2(size)) + 2


TEST_HASHES = [leaf_hash(data) for data in TEST_LEAVES]
TEST_NODES = tree_nodes(TEST_HASHES)

# Distinct leaves, so a proof can only verify where it should.
trees = st.tuples(st.integers(1, 300), st.binary(max_size=4)).map(
    lambda drawn: [leaf_hash(drawn[1] + i.to_bytes(4, "big")) for i in range(drawn[0])]
)
masks = st.integers(1, 255)


# --- transparency-dev vectors ---------------------------------------------------------------


def test_vectors_are_present() -> None:
    assert len(list((VECTORS / "inclusion").rglob("*.json"))) >= 90
    assert len(list((VECTORS / "consistency").rglob("*.json"))) >= 90


@pytest.mark.parametrize("path", _cases("inclusion"))
def test_inclusion_vector(path: Path | None) -> None:
    case = _load(path)
    _expect(
        case,
        lambda: verify_inclusion(
            _b64(case["leafHash"]),
            case["leafIdx"],
            case["treeSize"],
            _proof(case),
            _b64(case["root"]),
        ),
    )


@pytest.mark.parametrize("path", _cases("consistency"))
def test_consistency_vector(path: Path | None) -> None:
    case = _load(path)
    _expect(
        case,
        lambda: verify_consistency(
            case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), _proof(case)
        ),
    )


def _happy_paths(kind: str) -> list[dict[str, Any]]:
    return [_load(p) for p in sorted((VECTORS / kind).glob("*/happy-path.json"))]


def test_vector_roots_match_the_test_tree() -> None:
    stated = {case["treeSize"]: case["root"] for case in _happy_paths("inclusion")}
    for case in _happy_paths("consistency"):
        stated |= {case["size1"]: case["root1"], case["size2"]: case["root2"]}
    assert {1, 2, 3, 5, 6, 7, 8} <= set(stated)
    for size, root in stated.items():
        assert root_of(TEST_HASHES[:size]) == _b64(root)
        assert root_from_nodes(size, TEST_NODES) == _b64(root)


def test_vector_proofs_are_the_ones_we_build() -> None:
    for case in _happy_paths("inclusion"):
        index, size = case["leafIdx"], case["treeSize"]
        assert TEST_HASHES[index] == _b64(case["leafHash"])
        assert inclusion_proof(index, size, TEST_NODES) == _proof(case)
    for case in _happy_paths("consistency"):
        proof = consistency_proof(case["size1"], case["size2"], TEST_NODES)
        assert proof == _proof(case)


def test_test_tree_roots() -> None:
    for size, root in TEST_ROOTS.items():
        assert root_of(TEST_HASHES[:size]).hex() == root
        assert root_from_nodes(size, TEST_NODES).hex() == root


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"") == bytes.fromhex(TEST_ROOTS[1])
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == root_from_nodes(0, {}) == CompactRange().root() == EMPTY_ROOT
    assert node_hash(TEST_HASHES[0], TEST_HASHES[1]).hex() == TEST_ROOTS[2]
    assert issubclass(ProofError, VerificationError)


# --- node coordinates -----------------------------------------------------------------------


def test_subtree_nodes_are_the_maximal_aligned_subtrees() -> None:
    assert subtree_nodes(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert subtree_nodes(8, 13) == [(2, 2), (0, 12)]
    assert subtree_nodes(6, 7) == [(0, 6)]
    assert root_nodes(0) == []
    assert root_nodes(16) == [(4, 0)]


@pytest.mark.parametrize(("start", "end"), [(3, 3), (4, 2), (-1, 1), (1, 3), (4, 9), (2, 5)])
def test_subtree_nodes_refuse_ranges_outside_the_recursion(start: int, end: int) -> None:
    with pytest.raises(ValueError, match=r"\["):
        subtree_nodes(start, end)


def test_proof_builders_refuse_bad_sizes() -> None:
    with pytest.raises(ValueError, match="index"):
        inclusion_nodes(3, 3)
    with pytest.raises(ValueError, match="first"):
        consistency_nodes(4, 3)
    with pytest.raises(ValueError, match="negative"):
        root_nodes(-1)
    assert consistency_proof(0, 5, TEST_NODES) == consistency_proof(5, 5, TEST_NODES) == []


@given(trees, st.data())
def test_range_root_is_the_mth_of_the_range(leaves: list[bytes], data: st.DataObject) -> None:
    size = data.draw(st.integers(1, len(leaves)))
    alignment = 1 << (size - 1).bit_length()
    start = alignment * data.draw(st.integers(0, (len(leaves) - size) // alignment))
    nodes = only(tree_nodes(leaves), subtree_nodes(start, start + size))
    assert range_root(start, start + size, nodes) == root_of(leaves[start : start + size])


# --- roots and the compact range ------------------------------------------------------------


@settings(max_examples=50)
@given(trees)
def test_roots_from_nodes_and_compact_range(leaves: list[bytes]) -> None:
    nodes: dict[Node, bytes] = {}
    compact = CompactRange()
    for size, leaf in enumerate(leaves, start=1):
        completed = compact.append(leaf)
        assert completed[0] == ((0, size - 1), leaf)
        assert [level for (level, _), _ in completed] == list(range(len(completed)))
        nodes.update(completed)
        expected = root_of(leaves[:size])
        assert compact.size == size
        assert compact.root() == expected
        assert compact.nodes() == only(nodes, root_nodes(size))
        assert len(root_nodes(size)) == size.bit_count()
        assert root_from_nodes(size, only(nodes, root_nodes(size))) == expected
    # Every stored node is the MTH of the leaves it covers, and there are 2n - popcount(n).
    assert len(nodes) == 2 * len(leaves) - len(leaves).bit_count()
    for (level, index), digest in nodes.items():
        assert digest == root_of(leaves[index << level : (index + 1) << level])


@given(trees, st.data())
def test_compact_range_resumes_from_stored_nodes(leaves: list[bytes], data: st.DataObject) -> None:
    split = data.draw(st.integers(0, len(leaves)))
    nodes = tree_nodes(leaves)
    resumed = CompactRange.from_nodes(split, only(nodes, root_nodes(split)))
    assert resumed.root() == root_of(leaves[:split])
    for leaf in leaves[split:]:
        for node, digest in resumed.append(leaf):
            assert nodes[node] == digest
    assert resumed.size == len(leaves)
    assert resumed.root() == root_of(leaves)


def test_compact_range_takes_only_hashes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append(b"entry")


# --- inclusion ------------------------------------------------------------------------------


@given(trees, st.data())
def test_inclusion_proofs_verify_and_bind(leaves: list[bytes], data: st.DataObject) -> None:
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = root_of(leaves[:size])
    listed = inclusion_nodes(index, size)
    assert len(listed) <= max_nodes(size)
    assert len(set(listed)) == len(listed)
    proof = inclusion_proof(index, size, only(tree_nodes(leaves), listed))
    verify_inclusion(leaves[index], index, size, proof, root)

    for element in range(len(proof)):
        tampered = flip(proof, element, data.draw(st.integers(0, 31)), data.draw(masks))
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, tampered, root)
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], other, size, proof, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[other], index, size, proof, root)
    if len(leaves) > index + 1:
        wrong = data.draw(st.integers(index + 1, len(leaves)).filter(lambda s: s != size))
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, wrong, proof, root_of(leaves[:wrong]))
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, size, [*proof, root], root)
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, proof[:-1], root)


@given(trees, st.data())
def test_inclusion_nodes_are_exactly_what_the_proof_reads(
    leaves: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    nodes = only(tree_nodes(leaves), inclusion_nodes(index, len(leaves)))
    for missing in nodes:
        with pytest.raises(KeyError):
            inclusion_proof(index, len(leaves), {n: h for n, h in nodes.items() if n != missing})


# --- consistency ----------------------------------------------------------------------------


@given(trees, st.data())
def test_consistency_proofs_verify_and_bind(leaves: list[bytes], data: st.DataObject) -> None:
    second = data.draw(st.integers(1, len(leaves)), label="second")
    first = data.draw(st.integers(1, second), label="first")
    first_root, second_root = root_of(leaves[:first]), root_of(leaves[:second])
    listed = consistency_nodes(first, second)
    assert len(listed) <= max_nodes(second)
    assert len(set(listed)) == len(listed)
    proof = consistency_proof(first, second, only(tree_nodes(leaves), listed))
    verify_consistency(first, second, first_root, second_root, proof)
    assert (proof == []) == (first == second)

    for element in range(len(proof)):
        tampered = flip(proof, element, data.draw(st.integers(0, 31)), data.draw(masks))
        with pytest.raises(ProofError):
            verify_consistency(first, second, first_root, second_root, tampered)
    if first < second:
        with pytest.raises(ProofError):
            verify_consistency(first, second, second_root, first_root, proof)
        with pytest.raises(ProofError):
            verify_consistency(first, second, first_root, second_root, proof[:-1])
        with pytest.raises(ProofError):
            verify_consistency(first, second, first_root, second_root, [*proof, first_root])
        other = data.draw(st.integers(1, second).filter(lambda s: s != first), label="other")
        with pytest.raises(ProofError):
            verify_consistency(other, second, root_of(leaves[:other]), second_root, proof)
    if second < len(leaves):
        wrong = data.draw(st.integers(second + 1, len(leaves)), label="wrong")
        with pytest.raises(ProofError):
            verify_consistency(first, wrong, first_root, root_of(leaves[:wrong]), proof)


@given(trees, st.data())
def test_consistency_nodes_are_exactly_what_the_proof_reads(
    leaves: list[bytes], data: st.DataObject
) -> None:
    first = data.draw(st.integers(1, len(leaves)))
    nodes = only(tree_nodes(leaves), consistency_nodes(first, len(leaves)))
    for missing in nodes:
        with pytest.raises(KeyError):
            consistency_proof(first, len(leaves), {n: h for n, h in nodes.items() if n != missing})


def test_consistency_from_the_empty_tree_is_refused() -> None:
    # Every tree extends the empty one; RFC 9162 §2.1.4.2 starts at 0 < first, as the vectors do.
    assert consistency_proof(0, 8, TEST_NODES) == []
    with pytest.raises(ProofError):
        verify_consistency(0, 8, EMPTY_ROOT, bytes.fromhex(TEST_ROOTS[8]), [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        verify_consistency(0, 0, TEST_HASHES[0], TEST_HASHES[0], [])
    verify_consistency(8, 8, bytes.fromhex(TEST_ROOTS[8]), bytes.fromhex(TEST_ROOTS[8]), [])


@pytest.mark.parametrize("size", [0, 1, 5, 64, 300])
def test_extending_by_runs_builds_the_same_edge_as_appending(size: int) -> None:
    leaves = [merkle.leaf_hash(str(i).encode()) for i in range(size)]
    assert merkle.leaf_hashes(str(i).encode() for i in range(size)) == leaves
    one, runs = merkle.CompactRange(), merkle.CompactRange()
    for leaf in leaves:
        one.append(leaf)
    done = 0
    for width in [3, 1, 8, 16, 100, 1000]:
        runs.extend(leaves[done : done + width])
        done += width
    assert (runs.size, runs.nodes(), runs.root()) == (size, one.nodes(), merkle.root_of(leaves))
    with pytest.raises(ValueError, match="32 bytes"):
        runs.extend([b"short"])
    with pytest.raises(ValueError, match="2\\*\\*k"):
        merkle.perfect_root([bytes(32)] * 3)
