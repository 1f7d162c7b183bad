"""Times at the ends of the calendar (found by `make fuzz`: a ledger search from
0001-01-01T00:01:01+02:08 failed with a 500 when the database converted it to UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from trm_broker.domain.times import UtcTime, rfc3339

TIMES = TypeAdapter(UtcTime)
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(timezones=OFFSETS))
def test_an_accepted_time_always_has_a_utc_equivalent(value: datetime) -> None:
    try:
        value.astimezone(UTC)
    except OverflowError:
        with pytest.raises(ValidationError, match="out of range in UTC"):
            TIMES.validate_python(value)
    else:
        assert TIMES.validate_python(value) == value  # kept as given, offset and all


@pytest.mark.parametrize("text", ["0001-01-01T00:01:01+02:08", "9999-12-31T23:59:00-02:00"])
def test_a_time_with_no_utc_equivalent_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="out of range in UTC"):
        TIMES.validate_python(text)


@pytest.mark.parametrize(
    ("moment", "milliseconds", "auto"),
    [
        (
            datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
            "2026-11-23T10:00:00.000Z",
            "2026-11-23T10:00:00Z",
        ),
        (
            datetime(2026, 11, 23, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-23T10:00:00.123Z",
            "2026-11-23T10:00:00.123456Z",
        ),
    ],
)
def test_rfc3339_writes_one_spelling_in_utc(moment: datetime, milliseconds: str, auto: str) -> None:
    assert rfc3339(moment) == milliseconds
    assert rfc3339(moment, timespec="auto") == auto
    assert datetime.fromisoformat(rfc3339(moment, timespec="auto")) == moment
