"""A consent's scope, ready to be said in plain words (templates/_consent.html): who may
receive what, which data, until when, given by whom. Codes stay codes here; the template
says them in the reader's language."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from babel import Locale
from babel.dates import format_date

from trm_broker.node.web import i18n
from trm_broker.node.web.opening import Participant

#: A date as the scope says it: "6 March 2027", "6 mars 2027".
DATE_PATTERN = "d MMMM y"


@dataclass(frozen=True)
class Scope:
    given_by: str
    purposes: tuple[str, ...]
    recipients: tuple[str, ...]
    categories: tuple[str, ...]
    #: The first and the last day it is valid, as words; ``starts`` only when in the future.
    starts: str | None
    until: str | None


def say_date(day: date, language: str) -> str:
    return format_date(day, DATE_PATTERN, locale=language)


def recipient_name(participant: str, known: Mapping[str, Participant], language: str) -> str:
    """``ng.naptip (Nigeria)``: the registry's id, and its country in the reader's words."""
    found = known.get(participant)
    if found is None or not found.country:
        return participant
    country = Locale.parse(language).territories.get(found.country, found.country)
    return f"{participant} ({country})"


def scope_of(
    consent: Mapping[str, Any],
    known: Sequence[Participant],
    language: str,
    time_zone: str | None,
    now: datetime,
) -> Scope:
    """The scope of a consent as the broker records it (`ConsentIn`, or the case view's
    consent summary): recipients named with their countries, whole countries by name."""
    zone = i18n.zone(time_zone)
    by_id = {p.id: p for p in known}
    territories = Locale.parse(language).territories
    recipients = [recipient_name(str(r), by_id, language) for r in consent.get("recipients", [])]
    recipients += [territories.get(str(c), str(c)) for c in consent.get("recipient_countries", [])]
    starts = _moment(consent.get("valid_from"))
    ends = _moment(consent.get("valid_until"))
    return Scope(
        given_by=str(consent.get("given_by", "")),
        purposes=tuple(str(p) for p in consent.get("purposes", [])),
        recipients=tuple(recipients),
        categories=tuple(str(c) for c in consent.get("data_categories", [])),
        starts=say_date(starts.astimezone(zone).date(), language)
        if starts is not None and starts > now
        else None,
        # valid_until is exclusive: the last day it is valid is the one before.
        until=say_date((ends - timedelta(microseconds=1)).astimezone(zone).date(), language)
        if ends is not None
        else None,
    )


def _moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
