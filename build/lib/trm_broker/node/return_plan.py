"""Sending a return plan: to the destination focal point, then to the receiving organisation.

The TRM guidelines have the receiving organisation prepare the reception (pre-departure
counselling, contact before travel), so it needs the plan itself: the same payload goes to it
as a second ``return_preparation``, sealed to its own key. Both are queued together, the
second after the first in the case's order (``after_id``): the outbox submits it only once
the broker has receipted the first, and refuses it if the first is refused. The broker
accepts that second one only with the plan in force (docs/design.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.node import outbox
from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.keyring import Keyring
from trm_broker.node.schemas import PlanToReceivingOrgOut, SendRequest, SentOut
from trm_broker.node.sending import Composed, compose_message
from trm_broker.node.store import OutboxState
from trm_broker.web.problems import Problem

log = structlog.get_logger("trm_broker.node")


@dataclass(frozen=True)
class PlanOn:
    """A return plan's second message, to the receiving organisation ``org``: queued
    (``message_id``), or not, because it could not be composed (``refusal``); neither when
    the plan went to the organisation itself."""

    org: str
    focal_point: str
    message_id: str | None = None
    refusal: dict[str, Any] | None = None


async def plan_on(
    keys: Keyring, broker: BrokerClient, message: SendRequest, first: Composed
) -> tuple[PlanOn, Composed | None]:
    """Compose the plan for the receiving organisation the payload names; a refusal here
    leaves the first to go alone, as the answer says (the plan to the focal point stands)."""
    org = str(message.payload["receiving_org"])  # required: the payload was checked
    if org == message.recipient:  # sent to the organisation itself (e.g. again, after a fix)
        return PlanOn(org, message.recipient), None
    to_org = message.model_copy(update={"recipient": org, "in_reply_to": None})
    try:
        second = await compose_message(keys, broker, to_org)
    except Problem as problem:
        log.warning("return_plan_not_queued_for_receiving_org", problem=problem.slug)
        refusal = not_to_org(problem.body(), message.recipient, first.envelope.id, org)
        return PlanOn(org, message.recipient, refusal=refusal), None
    return PlanOn(org, message.recipient, message_id=second.envelope.id), second


def not_to_org(problem: dict[str, Any], focal_point: str, first: str, org: str) -> dict[str, Any]:
    """The refusal of the second message, saying that the first stands and what to do."""
    return {
        **problem,
        "detail": f"The plan was sent to {focal_point} (message {first}), not to the receiving"
        f" organisation {org}: {problem.get('detail', '')} Fix that, then send the plan again"
        f" with {org} as recipient.",
    }


def queued_to_org(on: PlanOn, first: str) -> PlanToReceivingOrgOut:
    """``to_receiving_org`` while the first message is still queued."""
    if on.message_id is None and on.refusal is None:  # the plan went to the org itself
        return PlanToReceivingOrgOut(
            recipient=on.org, sent=False, message_id=first, status="queued"
        )
    return PlanToReceivingOrgOut(
        recipient=on.org,
        sent=False,
        message_id=on.message_id,
        refused=on.refusal,
        status="queued" if on.message_id is not None else None,
    )


async def to_org(
    session: AsyncSession, first: SentOut, on: PlanOn
) -> tuple[PlanToReceivingOrgOut, bool]:
    """``to_receiving_org`` once the first message is receipted, and whether it is final."""
    if on.message_id is None:
        if on.refusal is not None:  # never queued
            return PlanToReceivingOrgOut(recipient=on.org, sent=False, refused=on.refusal), True
        return _receipted(on.org, first), True  # the plan went to the org itself
    second = await outbox.get(session, on.message_id)
    if second is None or second.state is OutboxState.QUEUED:
        queued = PlanToReceivingOrgOut(
            recipient=on.org, sent=False, message_id=on.message_id, status="queued"
        )
        return queued, False
    if second.state is OutboxState.REFUSED:
        problem = not_to_org(outbox.refusal(second) or {}, on.focal_point, first.message_id, on.org)
        refused = PlanToReceivingOrgOut(
            recipient=on.org,
            sent=False,
            message_id=on.message_id,
            refused=problem,
            status="refused",
        )
        return refused, True
    sent = await outbox.sent(session, on.message_id)
    if sent is None:  # pragma: no cover - written with the receipted state
        raise LookupError(on.message_id)
    return _receipted(on.org, sent), True


def _receipted(org: str, sent: SentOut) -> PlanToReceivingOrgOut:
    return PlanToReceivingOrgOut(
        recipient=org,
        sent=True,
        message_id=sent.message_id,
        envelope_digest=sent.envelope_digest,
        accepted_at=sent.accepted_at,
        receipt=sent.receipt,
        status="receipted",
    )
