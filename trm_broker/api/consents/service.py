"""Registering, reading and withdrawing consents; checking a message against its consent."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.auth import Caller
from trm_broker.api.consents.schemas import ConsentIn, ConsentOut
from trm_broker.crypto.canonical import canonical_json
from trm_broker.delivery import outcomes
from trm_broker.domain import consent as scope
from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.ids import uuid7
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.domain.participants import ParticipantKind
from trm_broker.store import alerts, cases, ledger
from trm_broker.store import consents as store
from trm_broker.store import participants as registry
from trm_broker.store.models import ConsentRecord
from trm_broker.web.problems import Conflict, ConsentMissing, Forbidden, NotFound


def _json(values: list[str]) -> str:
    return canonical_json(sorted(values)).decode()


def out(row: ConsentRecord) -> ConsentOut:
    return ConsentOut(
        id=row.id,
        case_ref=row.case_ref,
        registered_by=row.registered_by,
        given_by=row.given_by,
        purposes=json.loads(row.purposes),
        recipients=json.loads(row.recipients),
        recipient_countries=json.loads(row.recipient_countries),
        data_categories=json.loads(row.data_categories),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        form_digest=row.form_digest,
        registered_at=row.registered_at,
        withdrawn_at=row.withdrawn_at,
    )


async def register(
    session: AsyncSession,
    new: ConsentIn,
    caller: Caller,
    now: datetime,
    *,
    before_writes: Callable[[], Awaitable[None]] | None = None,
) -> ConsentOut:
    """A consent is registered by the focal point that sends the case (docs/design.md §7).

    Two reads and two INSERTs (the consent, its ledger entry), no unit of work;
    ``before_writes`` runs in the transaction before the first (the request's nonce)."""
    if caller.kind is not ParticipantKind.FOCAL_POINT:
        raise Forbidden("Only a focal point registers consents, for the cases it sends.")
    transfer = await cases.read(session, new.case_ref)
    if transfer is not None and transfer.sending != caller.participant_id:
        raise Forbidden(f"Case {new.case_ref} is sent by another focal point.")
    if new.id is not None and await store.read(session, new.id) is not None:
        raise Conflict(f"Consent {new.id} is already registered; a new consent needs a new id.")
    proof = caller.proof
    row = ConsentRecord(
        id=new.id or str(uuid7()),
        case_ref=new.case_ref,
        registered_by=caller.participant_id,
        given_by=new.given_by,
        purposes=_json([p.value for p in new.purposes]),
        recipients=_json(new.recipients),
        recipient_countries=_json(list(new.recipient_countries)),
        data_categories=_json([c.value for c in new.data_categories]),
        valid_from=new.valid_from,
        valid_until=new.valid_until,
        form_digest=new.form_digest,
        registered_at=now,
        withdrawn_at=None,
        proof=json.dumps(
            {
                "method": proof.method,
                "target_uri": proof.target_uri,
                "content_digest": proof.content_digest,
                "signature_input": proof.signature_input,
                "signature": proof.signature,
            }
        ),
    )
    if before_writes is not None:
        await before_writes()
    await store.insert_now(session, row)
    await ledger.append_now(
        session,
        LedgerEvent(
            EventType.CONSENT_REGISTERED,
            now,
            parties=(caller.participant_id,),
            countries=(caller.country,),
            case_ref=new.case_ref,
            facts={
                "consent_id": row.id,
                "given_by": row.given_by,
                "purposes": json.loads(row.purposes),
                "recipients": json.loads(row.recipients),
                "recipient_countries": json.loads(row.recipient_countries),
                "data_categories": json.loads(row.data_categories),
                "form_digest": row.form_digest,
            },
        ),
    )
    return out(row)


async def readable(session: AsyncSession, consent_id: str, caller: Caller) -> ConsentRecord:
    """The consent, for its registrant, the participants it names, and the case's parties;
    anyone else is told it does not exist (404)."""
    row = await store.get(session, consent_id)
    if row is not None:
        readers = {row.registered_by, *json.loads(row.recipients)}
        transfer = await cases.get(session, row.case_ref)
        if transfer is not None:
            readers |= cases.parties(transfer)
        if caller.participant_id in readers:
            return row
    raise NotFound("You are not party to a consent with this id.")


def covering(
    consent_ref: str | None, row: Any | None, message: scope.MessageFacts, registrant: str
) -> scope.Consent | None:
    """The consent a message references, checked against the message (403 if it does not
    cover it); ``None`` for a message that needs none (a withdrawal, or a closure that
    carries no personal data: ``consent.consent_needed``). ``row`` is that consent as read
    (``store.accept_reads``), ``None`` if there is none with that id.

    Only a consent registered by ``registrant``, the case's sending focal point (§7), can
    cover its messages. Any other is answered exactly as an unknown id: its scope is not
    the sender's to learn, nor to borrow."""
    if not scope.consent_needed(message.type, message.data_categories):
        return None
    if consent_ref is None:
        raise ConsentMissing(
            f"A {message.type.value} needs the consent_ref of a consent covering it.",
            rule="consent_missing",
        )
    if row is None or row.registered_by != registrant:
        raise ConsentMissing(
            f"No consent with id {consent_ref} was registered by the case's sending focal point.",
            rule="consent_unknown",
        )
    consent = store.to_domain(row)
    try:
        scope.check(consent, message)
    except scope.ConsentRefused as refused:
        raise ConsentMissing(
            refused.detail,
            rule="consent_scope",
            gaps=[gap.value for gap in refused.gaps],
        ) from refused
    return consent


async def withdraw(
    session: AsyncSession, row: ConsentRecord, now: datetime, keep: str | None = None
) -> None:
    """Withdrawal takes effect at once (docs/design.md §7): later messages under the consent are
    refused; undelivered ones are dropped; payloads kept under it are deleted; and everyone who
    may hold data under it is alerted (metadata only), so that their nodes restrict it."""
    if row.withdrawn_at is not None:
        return
    row.withdrawn_at = now
    # ``keep``: the withdrawal message itself, which must still reach its recipient.
    messages = [m for m in await store.messages_under(session, row.id) if m.id != keep]
    dropped = await store.drop_undelivered(session, [m.id for m in messages], now)
    if dropped:  # dead letters among them no longer need anyone's attention
        await outcomes.close_alert_if_resolved(session, row.case_ref, now)
    # Everyone who sent or received data under it, acknowledged or not (a node may hold a
    # message it opened but whose answer never reached the broker), and every party of the
    # case: the receiving organisation too, before any message reached it.
    concerned = {p for m in messages for p in (m.sender_id, m.recipient_id)}
    transfer = await cases.get(session, row.case_ref)
    if transfer is not None:
        concerned |= cases.parties(transfer)
    notified = sorted(concerned - {row.registered_by})
    countries = await registry.countries_of(session, {*concerned, row.registered_by})
    for message in messages:
        if message.envelope is None:
            continue
        message.envelope = None
        message.purged_at = now
        parties = (message.sender_id, message.recipient_id)
        ledger.append(
            session,
            LedgerEvent(
                EventType.PAYLOAD_PURGED,
                now,
                parties=parties,
                countries=tuple(countries[p] for p in parties),
                case_ref=message.case_ref,
                facts={
                    "message_id": message.id,
                    "envelope_digest": message.envelope_digest,
                    "reason": "consent_withdrawn",
                },
            ),
        )
    for participant in notified:
        alerts.raise_alert(
            session,
            AlertKind.CONSENT_WITHDRAWN,
            row.case_ref,
            (participant, row.registered_by),
            now,
            countries=countries,
        )
    ledger.append(
        session,
        LedgerEvent(
            EventType.CONSENT_WITHDRAWN,
            now,
            parties=(row.registered_by,),
            # Found by an auditor's search by any country concerned (docs/ledger.md).
            countries=tuple(sorted(set(countries.values()))),
            case_ref=row.case_ref,
            facts={
                "consent_id": row.id,
                "deliveries_dropped": dropped,
                "notified": notified,
            },
        ),
    )
    await session.flush()
