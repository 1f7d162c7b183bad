"""UUIDv7 message ids (RFC 9562 §5.7): valid version/variant, and ordered by creation time."""

from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trm_broker.domain.ids import is_uuid7, uuid7

MAX_MS = 2**48 - 1


@given(st.integers(min_value=0, max_value=MAX_MS))
def test_version_variant_and_timestamp(ms: int) -> None:
    text = uuid7(ms)
    value = uuid.UUID(text)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122  # variant bits 10
    assert value.int >> 80 == ms
    assert str(value) == text  # lowercase, hyphenated
    assert is_uuid7(text)


@given(st.integers(min_value=0, max_value=MAX_MS - 1), st.integers(min_value=1, max_value=10**9))
def test_later_milliseconds_sort_later(ms: int, delta: int) -> None:
    later = min(ms + delta, MAX_MS)
    assert uuid7(ms) < uuid7(later)


def test_ids_sort_in_creation_order_as_text() -> None:
    ids = [uuid7(1_700_000_000_000 + step) for step in range(50)]
    assert sorted(ids) == ids


def test_default_timestamp_is_now() -> None:
    before = int(time.time() * 1000)
    value = uuid.UUID(uuid7())
    after = int(time.time() * 1000)
    assert before <= value.int >> 80 <= after


def test_ids_in_the_same_millisecond_are_distinct() -> None:
    ids = {uuid7(1_700_000_000_000) for _ in range(1000)}
    assert len(ids) == 1000


def test_random_bits_vary() -> None:
    ids = [uuid.UUID(uuid7(0)).int for _ in range(200)]
    rand_a = {value >> 64 & 0xFFF for value in ids}
    rand_b = {value & (2**62 - 1) for value in ids}
    assert len(rand_a) > 100
    assert len(rand_b) == 200


@pytest.mark.parametrize(
    "text",
    [
        "9519ef94-5f80-4308-8ab4-330fb17cc0ed",  # version 4
        "0190a1b2-c3d4-7e5f-0a9b-0c1d2e3f4a5b",  # variant 0
        "0190a1b2-c3d4-7e5f-ca9b-0c1d2e3f4a5b",  # variant 110
        "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",  # uppercase
        "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",  # no hyphens
        "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}",
        " 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b ",
        "",
    ],
)
def test_is_uuid7_refuses_other_forms(text: str) -> None:
    assert not is_uuid7(text)


def test_is_uuid7_refuses_a_trailing_newline() -> None:
    # The Envelope model (same UUID7_PATTERN, pydantic's regex engine) refuses this text;
    # is_uuid7 must agree with it rather than let Python's ``$`` match before a final "\n".
    text = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n"
    assert not is_uuid7(text)


def test_is_uuid7_accepts_a_canonical_v7() -> None:
    assert is_uuid7("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
