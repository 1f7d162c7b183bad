"""Times as this system takes them: with their UTC offset, and representable in UTC.

Python's datetimes end at years 1 and 9999; a time near either end with an offset
(``0001-01-01T00:01+02:08``) is valid ISO 8601, yet has no UTC equivalent, and converting
it (to store it, to compare it in a database) fails. Such a time is refused as input,
where the caller can be told, instead of failing later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime


def _representable_in_utc(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC (years 1 to 9999)") from None
    return value  # as given: a signed object keeps its own text


#: An aware datetime that has a UTC equivalent.
UtcTime = Annotated[AwareDatetime, AfterValidator(_representable_in_utc)]


def rfc3339(moment: datetime, *, timespec: Literal["milliseconds", "auto"] = "milliseconds") -> str:
    """The one spelling of a time this system writes (RFC 3339 section 5.6): in UTC, with
    ``Z``, to the millisecond (``2026-11-23T10:00:00.000Z``), so that a digest over it is
    stable. ``timespec="auto"`` keeps the microseconds a time has (none are written when it
    has none), for the few texts that have always been written so (a retired key's time,
    the contract vectors, a consent's detail)."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
