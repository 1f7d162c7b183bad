"""The auditor's whole check over a ledger held in memory: what it accepts, what it refuses,
and the evidence it keeps when the broker signed two histories that cannot both be true."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.keys import SigningKey
from trm_broker.ledger import merkle
from trm_broker.ledger.audit import AuditFailure, Evidence, audit, check_evidence
from trm_broker.ledger.note import Checkpoint, NoteSigner, sign_checkpoint
from trm_broker.ledger.verifier import LedgerFailure, entry_leaf

ORIGIN = "trm-broker.example/ledger"


class MemoryLedger:
    """A broker's ledger as an auditor sees it: entries, a signed checkpoint, proofs."""

    def __init__(self, signer: NoteSigner, items: list[dict[str, Any]]) -> None:
        self.signer = signer
        self.items = items
        self.proofs_served = 0

    def nodes(self) -> dict[tuple[int, int], bytes]:
        tree = merkle.CompactRange()
        return {
            node: digest for item in self.items for node, digest in tree.append(entry_leaf(item))
        }

    def checkpoint(self) -> str:
        root = merkle.root_of([entry_leaf(e) for e in self.items])
        return sign_checkpoint(Checkpoint(ORIGIN, len(self.items), root), self.signer)

    def entries(self, size: int) -> Iterator[tuple[int, dict[str, Any], bytes | None]]:
        for index, item in enumerate(self.items[:size]):
            yield index, item, entry_leaf(item)

    def consistency(self, first: int, second: int) -> list[bytes]:
        self.proofs_served += 1
        return merkle.consistency_proof(first, second, self.nodes())

    def inclusion(self, index: int, size: int) -> tuple[dict[str, Any], list[bytes]]:
        return self.items[index], merkle.inclusion_proof(index, size, self.nodes())


def entries(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [{"v": 1, "type": "message.accepted", "message_id": f"m{i}{tag}"} for i in range(n)]


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, SigningKey.generate())


def vkeys(signer: NoteSigner) -> list[str]:
    return [signer.verifier().vkey()]


def test_a_growing_ledger_verifies_run_after_run(signer: NoteSigner, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    ledger = MemoryLedger(signer, entries(5))
    assert audit(ledger, vkeys(signer), state).size == 5
    ledger.items += entries(8, "b")
    assert audit(ledger, vkeys(signer), state).size == 13
    assert ledger.proofs_served == 1  # the broker's own proof was checked too
    assert state.with_name("state.json.leaves").stat().st_size == 13 * merkle.HASH_SIZE


def test_a_rewritten_history_fails_with_evidence_a_third_party_can_check(
    signer: NoteSigner, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    ledger = MemoryLedger(signer, entries(6))
    audit(ledger, vkeys(signer), state)
    kept = state.read_bytes()
    # The operator rewrites entry 2, appends more, and re-signs: alone, it verifies.
    ledger.items[2] = {"v": 1, "type": "message.accepted", "message_id": "forged"}
    ledger.items += entries(3, "c")
    assert audit(ledger, vkeys(signer)).size == 9
    with pytest.raises(AuditFailure) as excinfo:
        audit(ledger, vkeys(signer), state)
    assert excinfo.value.index == 2
    evidence = excinfo.value.evidence
    assert evidence is not None
    assert evidence.index == 2
    assert state.read_bytes() == kept  # a failed run leaves the last good state
    # A third party, from the file alone and the broker's public key:
    shown = check_evidence(
        Evidence.from_json(json.loads(json.dumps(evidence.to_json()))), vkeys(signer)
    )
    assert "leaf 2" in shown
    assert "rewritten" in shown
    # Evidence is checked, not believed: swap in the other leaf and it shows nothing.
    same = dataclasses.replace(evidence, latest_leaf=evidence.earlier_leaf)
    with pytest.raises(LedgerFailure):
        check_evidence(same, vkeys(signer))
    # Nor does it hold under another broker's key.
    stranger = NoteSigner(ORIGIN, SigningKey.generate())
    with pytest.raises(LedgerFailure, match="signature"):
        check_evidence(evidence, vkeys(stranger))


def test_a_same_size_tree_with_another_root_is_evidence(signer: NoteSigner, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    ledger = MemoryLedger(signer, entries(7))
    audit(ledger, vkeys(signer), state)
    ledger.items[6] = {"v": 1, "type": "message.accepted", "message_id": "forged"}
    with pytest.raises(AuditFailure) as excinfo:
        audit(ledger, vkeys(signer), state)
    assert excinfo.value.evidence is not None
    assert "same size" in excinfo.value.evidence.reason
    assert "different roots" in check_evidence(excinfo.value.evidence, vkeys(signer))


def test_a_shrunk_tree_is_located_but_proves_nothing_to_others(
    signer: NoteSigner, tmp_path: Path
) -> None:
    """An older checkpoint served again looks exactly like this: no evidence is claimed."""
    state = tmp_path / "state.json"
    ledger = MemoryLedger(signer, entries(9))
    audit(ledger, vkeys(signer), state)
    ledger.items = ledger.items[:4]
    with pytest.raises(AuditFailure, match="shrank") as excinfo:
        audit(ledger, vkeys(signer), state)
    assert excinfo.value.evidence is None


def test_an_altered_entry_without_a_fork_has_no_evidence(
    signer: NoteSigner, tmp_path: Path
) -> None:
    """The broker serves an altered entry but its signed checkpoints are consistent: the
    fault is located, but two checkpoints prove nothing, so no evidence is claimed."""
    state = tmp_path / "state.json"
    ledger = MemoryLedger(signer, entries(6))
    audit(ledger, vkeys(signer), state)
    honest = list(ledger.items)

    class Altering(MemoryLedger):
        def entries(self, size: int) -> Iterator[tuple[int, dict[str, Any], bytes | None]]:
            for index, item, leaf in super().entries(size):
                yield index, (dict(item, message_id="x") if index == 3 else item), leaf

    with pytest.raises(AuditFailure) as excinfo:
        audit(Altering(signer, honest), vkeys(signer), state)
    assert excinfo.value.index == 3
    assert excinfo.value.evidence is None


class PagedLedger(MemoryLedger):
    """The same ledger read as the CLI reads it: the entries' bytes, three a page."""

    def pages(self, size: int) -> Iterator[tuple[int, list[bytes], bytes | None]]:
        bodies = [canonical_json(item) for item in self.items[:size]]
        for start in range(0, len(bodies), 3):
            page = bodies[start : start + 3]
            yield start, page, b"".join(merkle.leaf_hash(body) for body in page)


def test_read_by_pages_the_same_checks_hold_and_the_same_state_is_kept(
    signer: NoteSigner, tmp_path: Path
) -> None:
    by_entry, by_page = tmp_path / "entry.json", tmp_path / "page.json"
    ledger, paged = MemoryLedger(signer, entries(5)), PagedLedger(signer, entries(5))
    assert audit(ledger, vkeys(signer), by_entry) == audit(paged, vkeys(signer), by_page)
    for each in (ledger, paged):
        each.items += entries(8, "b")
    assert audit(paged, vkeys(signer), by_page).size == 13
    assert paged.proofs_served == 1
    audit(ledger, vkeys(signer), by_entry)
    leaves = by_entry.with_name("entry.json.leaves").read_bytes()
    assert by_page.with_name("page.json.leaves").read_bytes() == leaves
    # History rewritten and re-signed: located, with evidence a third party can check.
    paged.items[4] = {"v": 1, "type": "message.accepted", "message_id": "forged"}
    paged.items += entries(2, "c")
    with pytest.raises(AuditFailure) as excinfo:
        audit(paged, vkeys(signer), by_page)
    assert excinfo.value.index == 4
    assert excinfo.value.evidence is not None
    assert "leaf 4" in check_evidence(excinfo.value.evidence, vkeys(signer))
