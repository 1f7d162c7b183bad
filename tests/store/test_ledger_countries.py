"""An entry's countries are all in the columns a search by country reads, each once, as its
body lists them: a country named twice (two parties of one country) hides no other."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.store import ledger

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def alert(countries: tuple[str, ...]) -> LedgerEvent:
    parties = ("ng.shelter", "ng.naptip", "at.focal-point")[: len(countries)]
    return LedgerEvent(
        EventType.ALERT_RAISED,
        NOW,
        parties=parties,
        countries=countries,
        case_ref="AT-2026-0001",
        facts={"alert": "reception_overdue"},
    )


def test_a_country_named_twice_leaves_room_for_the_other() -> None:
    entry = ledger.append(AsyncSession(), alert(("NG", "NG", "AT")))
    assert (entry.country1, entry.country2) == ("AT", "NG")
    assert json.loads(entry.body)["countries"] == ["AT", "NG"]


def test_an_entry_naming_three_countries_is_refused_rather_than_found_by_two() -> None:
    with pytest.raises(ValueError, match="two countries"):
        ledger.append(AsyncSession(), alert(("NG", "FR", "AT")))
