"""Types of query and path parameters shared by the broker's and the node's APIs."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path
from pydantic import BeforeValidator

from trm_broker.domain.envelope import CONSENT_REF_PATTERN
from trm_broker.domain.times import UtcTime

#: The largest cursor or index a caller may name: beyond it, the database's integers end.
MAX_CURSOR = 2**62

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_8601_only(value: Any) -> Any:
    """pydantic reads a number as seconds since 1970; a time in this API is ISO 8601 text."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("a time is ISO 8601 with its offset, e.g. 2026-01-31T00:00:00Z")
    return value


#: A time with its UTC offset, written in ISO 8601 (RFC 3339), as the schema says.
Timestamp = Annotated[UtcTime, BeforeValidator(_iso_8601_only)]

#: A consent's id, as the registering node's case system names it.
ConsentId = Annotated[str, Path(pattern=CONSENT_REF_PATTERN)]
