"""What a party may send next in a case, read from the broker's case view as that party
(`GET /v1/cases/{case_ref}`, signed with its key), and the consent a message that names
none is sent under: the one consent of the case that covers it (docs/node.md, issue 18).

The broker computes the next steps from its workflow (``domain.next_steps``); the node
chooses the consent with the same scope check (``domain.next_steps.covering``), over the
consents the case view lists, and with the message's own data categories.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.case_state import CaseTransfer
from trm_broker.domain.consent import Consent, GivenBy, MessageFacts
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.next_steps import covering
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.schemas import NextStepOut
from trm_broker.web.problems import Problem


class ConsentNotChosen(Problem):
    """A message that needs a consent names none, and the case has not exactly one that
    covers it."""

    status, slug, title = 400, "consent-not-chosen", "Name the consent the message is sent under"


class CaseViewUnreadable(Exception):
    """The broker's case view could not be read or did not have the shape it should."""

    def __init__(self, status: int, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"case view: {status}")
        self.status = status
        self.problem = problem or {}


async def case_view(broker: BrokerClient, signer: SigningKey, case_ref: str) -> dict[str, Any]:
    """The broker's case view, read as the signer's participant."""
    try:
        return await broker.case(signer, case_ref)
    except BrokerError as exc:
        raise CaseViewUnreadable(exc.status, exc.problem) from exc


def next_steps_of(view: dict[str, Any], participant: str) -> list[NextStepOut]:
    """The next steps the case view gives ``participant`` (none if it holds no role)."""
    try:
        for party in view.get("next_steps", []):
            if party["participant"] == participant:
                return [NextStepOut.model_validate(step) for step in party["steps"]]
    except (KeyError, TypeError, ValidationError) as exc:
        raise CaseViewUnreadable(502) from exc
    return []


def consents_of(view: dict[str, Any]) -> list[Consent]:
    """The case's consents, with their scope, as the case view lists them."""
    try:
        return [
            Consent(
                id=str(c["id"]),
                case_ref=str(view["case_ref"]),
                registered_by=str(c["registered_by"]),
                given_by=GivenBy(c["given_by"]),
                purposes=frozenset(MessageType(p) for p in c["purposes"]),
                recipients=frozenset(c["recipients"]),
                recipient_countries=frozenset(c["recipient_countries"]),
                data_categories=frozenset(DataCategory(d) for d in c["data_categories"]),
                valid_from=datetime.fromisoformat(c["valid_from"]),
                valid_until=_time(c.get("valid_until")),
                withdrawn_at=_time(c.get("withdrawn_at")),
            )
            for c in view["consents"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise CaseViewUnreadable(502) from exc


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


async def choose_consent(
    broker: BrokerClient,
    signer: SigningKey,
    *,
    message_type: MessageType,
    case_ref: str,
    sender: str,
    recipient: str,
    recipient_country: str,
    data_categories: Collection[DataCategory],
    now: datetime,
) -> str:
    """The one consent of the case that covers this message; else :class:`ConsentNotChosen`
    naming the candidates (those that cover it: none, or several) and what to do.
    :class:`CaseViewUnreadable` when the broker cannot be asked."""
    try:
        view = await case_view(broker, signer, case_ref)
    except CaseViewUnreadable as exc:
        if exc.status != 404:
            raise  # the broker is down or failed: the caller answers as for any broker call
        raise ConsentNotChosen(
            f"Name the consent in consent_ref: {case_ref} is no case of {sender}'s at the "
            "broker yet (a referral opens it), so the node cannot choose one.",
            candidates=[],
        ) from exc
    try:
        state = CaseTransfer.from_json(view["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CaseViewUnreadable(502) from exc
    consents = consents_of(view)
    facts = MessageFacts(
        type=message_type,
        case_ref=case_ref,
        sender=sender,
        recipient=recipient,
        recipient_country=recipient_country,
        data_categories=frozenset(data_categories),
        at=now,
    )
    found = covering(consents, state, facts)
    if len(found) == 1:
        return found[0]
    kinds = ", ".join(sorted(c.value for c in data_categories)) or "none"
    if not found:
        detail = (
            f"No consent of case {case_ref} covers a {message_type.value} to {recipient} with "
            f"data categories {kinds} now: the sending focal point registers one "
            "(POST /consents) whose purposes, recipients and data categories cover it, and "
            "you send again, naming it in consent_ref."
        )
    else:
        detail = (
            f"Several consents of case {case_ref} cover this {message_type.value}: name the "
            "one it is sent under in consent_ref (one of `candidates`)."
        )
    raise ConsentNotChosen(detail, candidates=list(found))
