"""Alerts for the parties of a case, each raised and closed together with its ledger entry
in the caller's transaction (docs/design.md §6, §7, §9)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.ids import uuid7
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.store import ledger
from trm_broker.store.models import AlertRecord


def raise_alert(
    session: AsyncSession,
    kind: AlertKind,
    case_ref: str,
    parties: Sequence[str],
    now: datetime,
    *,
    countries: Mapping[str, str] | None = None,
) -> AlertRecord:
    """Open an alert for ``parties`` (one to three participant ids, the first being who it
    is mainly for) and record an ``alert.raised`` ledger entry naming them.

    Every alert has its entry, whoever raises it: the workflow's overdue alerts, a dead
    letter's, and a consent withdrawal's notices to those who received data under it. The
    last are the reason this is one helper: the ``consent.withdrawn`` entry names only the
    focal point that withdrew (its ``notified`` member lists the others), so without an
    ``alert.raised`` entry of their own the participants notified could not find in the
    ledger, nor prove, that they were told. ``countries`` (participant id to country)
    makes the entry findable by country, as the callers that know them have always done.
    """
    if not 1 <= len(parties) <= 3:
        raise ValueError("an alert names one to three parties")
    named = [*parties, None, None]
    alert = AlertRecord(
        id=str(uuid7()),
        case_ref=case_ref,
        kind=kind,
        party1=named[0],
        party2=named[1],
        party3=named[2],
        raised_at=now,
    )
    session.add(alert)
    _record(session, EventType.ALERT_RAISED, alert, now, countries)
    return alert


def close_alert(
    session: AsyncSession,
    alert: AlertRecord,
    now: datetime,
    *,
    countries: Mapping[str, str] | None = None,
) -> None:
    """Close an open alert and record its ``alert.closed`` ledger entry."""
    alert.closed_at = now
    _record(session, EventType.ALERT_CLOSED, alert, now, countries)


def _record(
    session: AsyncSession,
    event: EventType,
    alert: AlertRecord,
    now: datetime,
    countries: Mapping[str, str] | None,
) -> None:
    parties = tuple(p for p in (alert.party1, alert.party2, alert.party3) if p is not None)
    ledger.append(
        session,
        LedgerEvent(
            event,
            now,
            parties=parties,
            countries=tuple(countries[p] for p in parties if p in countries) if countries else (),
            case_ref=alert.case_ref,
            facts={"alert": alert.kind.value},
        ),
    )
