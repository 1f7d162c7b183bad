"""Sending a return plan: to the destination focal point, then to the receiving organisation.

The TRM guidelines have the receiving organisation prepare the reception (pre-departure
counselling, contact before travel), so it needs the plan itself: the same payload goes to it
as a second ``return_preparation``, sealed to its own key, once the broker has accepted the
first. The broker accepts that second one only with the plan in force (docs/design.md §6).
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.keyring import Keyring
from trm_broker.node.schemas import (
    PlanToReceivingOrgOut,
    ReturnPreparationSentOut,
    SendRequest,
    SentOut,
)
from trm_broker.node.sending import send_message
from trm_broker.web.problems import Problem

log = structlog.get_logger("trm_broker.node")


async def send_return_plan(
    keys: Keyring, broker: BrokerClient, session: AsyncSession, request: SendRequest
) -> ReturnPreparationSentOut:
    """Send ``request`` (a return_preparation), then the same plan to the receiving
    organisation its payload names. A refusal of the first is raised as usual; a refusal of
    the second is answered in ``to_receiving_org``, since the first stands."""
    first = await send_message(keys, broker, session, request)
    org = str(request.payload["receiving_org"])  # required: send_message checked the payload
    if org == request.recipient:  # sent to the organisation itself (e.g. again, after a fix)
        return _answer(first, _sent(org, first))
    on = request.model_copy(update={"recipient": org, "in_reply_to": None})
    try:
        second = await send_message(keys, broker, session, on)
    except Problem as problem:
        log.warning(
            "return_plan_not_sent_to_receiving_org",
            message_id=first.message_id,
            problem=problem.slug,
            status=problem.status,
        )
        refused = problem.body()
        refused["detail"] = (
            f"The plan was sent to {request.recipient} (message {first.message_id}), not to"
            f" the receiving organisation {org}: {problem.detail} Fix that, then send the plan"
            f" again with {org} as recipient."
        )
        return _answer(first, PlanToReceivingOrgOut(recipient=org, sent=False, refused=refused))
    return _answer(first, _sent(org, second))


def _sent(org: str, sent: SentOut) -> PlanToReceivingOrgOut:
    return PlanToReceivingOrgOut(
        recipient=org,
        sent=True,
        message_id=sent.message_id,
        envelope_digest=sent.envelope_digest,
        accepted_at=sent.accepted_at,
        receipt=sent.receipt,
    )


def _answer(first: SentOut, to_org: PlanToReceivingOrgOut) -> ReturnPreparationSentOut:
    return ReturnPreparationSentOut(
        message_id=first.message_id,
        envelope_digest=first.envelope_digest,
        accepted_at=first.accepted_at,
        receipt=first.receipt,
        to_receiving_org=to_org,
    )
