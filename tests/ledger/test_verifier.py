"""The streaming verifier names the first wrong index for every kind of tampering."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from trm_broker.crypto.canonical import canonical_json
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint
from trm_broker.ledger.verifier import Earlier, LedgerFailure, LedgerVerifier, entry_leaf

ORIGIN = "trm-broker.example/ledger"


def entries(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [{"v": 1, "type": "message.accepted", "message_id": f"m{i}{tag}"} for i in range(n)]


def checkpoint_of(items: list[dict[str, Any]]) -> Checkpoint:
    return Checkpoint(ORIGIN, len(items), merkle.root_of([entry_leaf(e) for e in items]))


PAGE = 0  # entry by entry (LedgerVerifier.add); a page size: LedgerVerifier.add_bodies


@pytest.fixture(autouse=True, params=[0, 1, 3, 8])
def page(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test runs entry by entry, and by pages of the entries' bytes (the CLI's way)."""
    global PAGE
    PAGE = request.param
    yield
    PAGE = 0


def run(
    served: list[tuple[int, dict[str, Any]]],
    checkpoint: Checkpoint,
    earlier: Earlier | None = None,
    stored: list[bytes] | None = None,
) -> None:
    verifier = LedgerVerifier(checkpoint, earlier)
    if not PAGE:
        for position, (index, entry) in enumerate(served):
            verifier.add(index, entry, stored[position] if stored else None)
        verifier.finish()
        return
    # As a source serves pages: contiguous runs of indexes, each split into pages.
    runs: list[list[int]] = []
    for position, (index, _) in enumerate(served):
        if runs and served[runs[-1][-1]][0] + 1 == index:
            runs[-1].append(position)
        else:
            runs.append([position])
    for positions in runs:
        for at in range(0, len(positions), PAGE):
            chunk = positions[at : at + PAGE]
            bodies = [canonical_json(served[p][1]) for p in chunk]
            verifier.add_bodies(
                served[chunk[0]][0], bodies, [stored[p] for p in chunk] if stored else None
            )
    verifier.finish()


def as_served(items: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(items))


def leaves(items: list[dict[str, Any]]) -> Iterator[bytes]:
    return iter([entry_leaf(e) for e in items])


def test_an_honest_ledger_verifies() -> None:
    items = entries(37)
    run(as_served(items), checkpoint_of(items), stored=[entry_leaf(e) for e in items])


def failure(excinfo: pytest.ExceptionInfo[LedgerFailure]) -> tuple[int | None, str]:
    return excinfo.value.index, excinfo.value.reason


def test_an_altered_entry_is_named_by_its_stored_leaf() -> None:
    items = entries(10)
    stored = [entry_leaf(e) for e in items]
    altered = [dict(e) for e in items]
    altered[6]["message_id"] = "forged"
    with pytest.raises(LedgerFailure) as excinfo:
        run(as_served(altered), checkpoint_of(items), stored=stored)
    assert failure(excinfo)[0] == 6


def test_a_missing_entry_is_named() -> None:
    items = entries(10)
    served = [pair for pair in as_served(items) if pair[0] != 4]
    with pytest.raises(LedgerFailure) as excinfo:
        run(served, checkpoint_of(items))
    assert failure(excinfo) == (4, "entry 4 is missing (got index 5)")


def test_a_truncated_tail_is_named() -> None:
    items = entries(10)
    with pytest.raises(LedgerFailure) as excinfo:
        run(as_served(items[:7]), checkpoint_of(items))
    assert failure(excinfo)[0] == 7


def test_without_stored_leaves_an_altered_entry_still_breaks_the_root() -> None:
    items = entries(10)
    swapped = items[:]
    swapped[2], swapped[8] = swapped[8], swapped[2]
    with pytest.raises(LedgerFailure, match="root"):
        run(as_served(swapped), checkpoint_of(items))


def test_a_rewritten_and_re_signed_history_is_caught_by_the_earlier_run() -> None:
    before = entries(20)
    rewritten = [dict(e) for e in before] + entries(5, tag="new")
    rewritten[11]["message_id"] = "rewritten"
    resigned = checkpoint_of(rewritten)  # consistent with itself, signed anew
    run(as_served(rewritten), resigned)  # alone, it verifies: nothing to compare with
    earlier = Earlier(checkpoint_of(before), leaves(before))
    with pytest.raises(LedgerFailure) as excinfo:
        run(as_served(rewritten), resigned, earlier)
    assert failure(excinfo)[0] == 11


def test_a_shrunk_tree_is_refused_against_the_earlier_run() -> None:
    before = entries(20)
    with pytest.raises(LedgerFailure, match="shrank"):
        LedgerVerifier(checkpoint_of(before[:15]), Earlier(checkpoint_of(before), leaves(before)))


def test_an_earlier_root_that_no_longer_matches_is_caught_even_without_its_leaves() -> None:
    before = entries(8)
    later = entries(8, tag="x") + entries(4)
    earlier = Earlier(checkpoint_of(before), iter([entry_leaf(e) for e in later[:8]]))
    with pytest.raises(LedgerFailure, match="root verified earlier"):
        run(as_served(later), checkpoint_of(later), earlier)


def test_an_appended_history_verifies_against_the_earlier_run() -> None:
    before = entries(20)
    after = before + entries(13, tag="new")
    run(as_served(after), checkpoint_of(after), Earlier(checkpoint_of(before), leaves(before)))


def test_entries_beyond_the_checkpoint_or_not_events_are_refused() -> None:
    items = entries(3)
    with pytest.raises(LedgerFailure, match="beyond"):
        run([*as_served(items), (3, {"v": 1, "type": "x"})], checkpoint_of(items))
    with pytest.raises(LedgerFailure, match="not a ledger event"):
        run([(0, {"type": "x"})], checkpoint_of([{"type": "x"}]))
