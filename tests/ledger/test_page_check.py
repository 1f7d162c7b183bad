"""The verifier's check of a page of entries' bytes: each must be the RFC 8785 form of a
ledger event. The page-at-once check (orjson) must agree with the RFC 8785 library entry by
entry, and name the first wrong entry whatever the check it fails."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trm_broker.crypto.canonical import canonical_json
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint
from trm_broker.ledger.verifier import (
    LedgerFailure,
    LedgerVerifier,
    _entry_fault,
    first_bad_entry,
)


def entries(n: int) -> list[dict[str, Any]]:
    return [{"v": 1, "type": "message.accepted", "message_id": f"m{i}"} for i in range(n)]


def checkpoint_of(items: list[dict[str, Any]]) -> Checkpoint:
    leaves = [merkle.leaf_hash(canonical_json(e)) for e in items]
    return Checkpoint("trm-broker.example/ledger", len(items), merkle.root_of(leaves))


def test_a_page_names_its_first_wrong_entry_whatever_the_check() -> None:
    items = entries(12)
    bodies = [canonical_json(e) for e in items]
    stored = [merkle.leaf_hash(b) for b in bodies]
    altered = list(bodies)
    altered[9] = canonical_json(dict(items[9], message_id="forged"))
    altered[7] = b'{"type":"message.accepted", "v":1}'  # not canonical: a space
    verifier = LedgerVerifier(checkpoint_of(items))
    verifier.add_bodies(0, bodies[:4], stored[:4])
    with pytest.raises(LedgerFailure) as excinfo:
        verifier.add_bodies(4, altered[4:], stored[4:])
    assert excinfo.value.index == 7
    assert excinfo.value.reason == "the entry's bytes are not its RFC 8785 canonical form"


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"x","v":1} ',
        b'{"v":1,"type":"x"}',  # keys unsorted
        b'{"type":"x","v":1.0}',  # RFC 8785 writes 1
        b'{"type":"x","v":1,"w":1e2}',
        b'{"n":9007199254740993,"type":"x","v":1}',  # beyond 2**53: RFC 8785 refuses
        b'{"type":"x","type":"y","v":1}',  # a duplicate key
        b'{"type":"\\u0041","v":1}',  # an escape RFC 8785 does not write
        b'{"type":"x","v":1}{"type":"x","v":1}',
        b'{"type":"x","v":2}',
        b"[1]",
        b"",
        b"\xff",
    ],
)
def test_only_the_rfc_8785_form_of_an_event_passes(body: bytes) -> None:
    fine = canonical_json({"type": "x", "v": 1})
    assert first_bad_entry([fine, body, fine]) == (1, _entry_fault(body))
    assert _entry_fault(body) is not None


def test_keys_beyond_the_bmp_sort_by_utf16_code_units() -> None:
    entry = {"type": "x", "v": 1, "\ue000": 1, "\U0001f600": 2}
    body = canonical_json(entry)  # RFC 8785 puts the emoji first, orjson would not
    assert body.index("\U0001f600".encode()) < body.index("\ue000".encode())
    assert first_bad_entry([body]) is None
    assert first_bad_entry([body.replace(b"\xf0\x9f\x98\x80", b"\xf0\x9f\x98\x81")]) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=4), st.booleans())
def test_the_page_check_agrees_with_rfc_8785_entry_by_entry(
    extra: dict[str, Any], reorder: bool
) -> None:
    entry = {**extra, "v": 1, "type": "x"}
    try:
        canonical = canonical_json(entry)
    except Exception:
        canonical = None
    candidates = [
        json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace"),
        json.dumps(entry, sort_keys=not reorder).encode(),
    ]
    if canonical is not None:
        candidates.append(canonical)
    for body in candidates:
        expected = _entry_fault(body)
        found = first_bad_entry([body])
        assert (found is None) == (expected is None), (body, found, expected)
        assert expected is not None or body == canonical
