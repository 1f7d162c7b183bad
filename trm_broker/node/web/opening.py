"""A case as the web app shows it, also before the broker knows it: a new case whose consent
the organisation registered here, and whose referral is not sent yet (the broker's case
begins with its referral, docs/design.md §6). Its next step is the referral, to each focal
point of another country its consents name for a referral.

And the participants of the registry, for choosing a consent's recipients in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.messages import MessageType
from trm_broker.node import case_view, consent_forms
from trm_broker.node.access import Principal
from trm_broker.node.broker_client import BrokerError
from trm_broker.node.consent_forms import ConsentForm
from trm_broker.node.sent_api import NodeParts
from trm_broker.node.sent_schemas import CaseViewOut, ConsentState
from trm_broker.web.problems import Problem

#: The kinds of participants a consent may name as recipients.
RECIPIENT_KINDS = ("focal_point", "receiving_org")


@dataclass(frozen=True)
class Participant:
    id: str
    kind: str
    country: str


async def participants(state: NodeParts) -> list[Participant]:
    """The registry's focal points and receiving organisations, by country then id; none
    when the broker cannot be asked."""
    try:
        registry = await state.broker.registry()
    except BrokerError:
        return []
    found = [
        Participant(str(p["id"]), str(p.get("kind")), str(p.get("country", "")))
        for p in registry.participants.values()
        if p.get("kind") in RECIPIENT_KINDS
    ]
    return sorted(found, key=lambda p: (p.country, p.id))


async def case_here(
    case_ref: str, state: NodeParts, db: AsyncSession, principal: Principal
) -> CaseViewOut:
    """The case as the JSON API's case view shows it; a case the broker does not know yet
    but whose consent the organisation registered here: opened, its referral to send."""
    try:
        return await case_view.case_view(case_ref, state, db, principal)
    except Problem as exc:
        if exc.status != 404:
            raise
        mine = principal.participants(state.keys)
        forms = await consent_forms.registered(db, mine, case_ref)
        if not forms:
            raise
        return opened(case_ref, forms[0].organisation, forms, await participants(state))


def opened(
    case_ref: str, reader: str, forms: Sequence[ConsentForm], known: Sequence[Participant]
) -> CaseViewOut:
    now = datetime.now(UTC)
    consents = [_state(form.body, now) for form in forms]
    kinds = {p.id: p for p in known}
    own = kinds.get(reader)
    steps: list[dict[str, Any]] = []
    for recipient in sorted({r for c in consents for r in _recipients(forms, c.id)}):
        party = kinds.get(recipient)
        if party is None or party.kind != "focal_point" or recipient == reader:
            continue
        if own is not None and party.country == own.country:
            continue  # a referral goes to the country of return
        covering = [
            c.id
            for c in consents
            if c.state == "active"
            and recipient in _recipients(forms, c.id)
            and MessageType.REFERRAL.value in _purposes(forms, c.id)
        ]
        if covering:
            steps.append(
                {
                    "type": MessageType.REFERRAL.value,
                    "recipient": recipient,
                    "allowed": True,
                    "consent_needed": True,
                    "consents": covering,
                    "rule": None,
                    "detail": None,
                    "opening": True,
                }
            )
    return CaseViewOut(
        case_ref=case_ref,
        reader=reader,
        stage=None,
        timeline=[],
        consents=consents,
        alerts=[],
        deadlines=None,
        next_steps=[{"participant": reader, "role": "sending_focal_point", "steps": steps}],
        broker=None,
        broker_problem=None,
    )


def _body(forms: Sequence[ConsentForm], consent_id: str) -> dict[str, Any]:
    return next((f.body for f in forms if f.consent_id == consent_id), {})


def _recipients(forms: Sequence[ConsentForm], consent_id: str) -> list[str]:
    return [str(r) for r in _body(forms, consent_id).get("recipients", [])]


def _purposes(forms: Sequence[ConsentForm], consent_id: str) -> list[str]:
    return [str(p) for p in _body(forms, consent_id).get("purposes", [])]


def _state(body: dict[str, Any], now: datetime) -> ConsentState:
    consent = ConsentState.model_validate(
        {
            "id": body["id"],
            "given_by": body.get("given_by"),
            "valid_from": body.get("valid_from"),
            "valid_until": body.get("valid_until"),
            "state": "unknown",
        }
    )
    if consent.valid_from is not None and consent.valid_from > now:
        return consent.model_copy(update={"state": "not_yet_valid"})
    if consent.valid_until is not None and consent.valid_until <= now:
        return consent.model_copy(update={"state": "expired"})
    return consent.model_copy(update={"state": "active"})


def is_sender(view: CaseViewOut) -> bool:
    """Whether the reader sends the case (registers its consents): the broker says it is its
    sending focal point, or the case is one opened here, unknown to the broker."""
    if view.broker is None and not view.timeline:
        return True
    parties = view.next_steps if isinstance(view.next_steps, list) else []
    return any(
        isinstance(p, dict)
        and p.get("participant") == view.reader
        and p.get("role") == "sending_focal_point"
        for p in parties
    )
