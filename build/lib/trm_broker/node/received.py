"""Received messages as a case worker reads them: decrypted (unless restricted), with the
consent each came under and what its recipient may send next in the case (issue 18)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.case_steps import CaseViewUnreadable, case_view, next_steps_of
from trm_broker.node.case_view import received_view
from trm_broker.node.keyring import Keyring
from trm_broker.node.schemas import NextStepOut, ReceivedMessageOut
from trm_broker.node.store import ReceivedMessage

log = structlog.get_logger("trm_broker.node")

#: Why ``next_steps`` is null (``next_steps_unavailable``).
BROKER_UNAVAILABLE = "broker-unavailable"
NOT_ASKED = "not-asked"


async def addressed_to(
    session: AsyncSession, message_id: str, recipients: Collection[str]
) -> ReceivedMessage | None:
    """The received message ``message_id`` if it is addressed to one of ``recipients``
    (the caller's organisations): to anyone else it does not exist."""
    query = select(ReceivedMessage).where(
        ReceivedMessage.id == message_id, ReceivedMessage.recipient.in_(recipients)
    )
    return (await session.scalars(query)).one_or_none()


@dataclass
class NextSteps:
    """Reads each case's next steps from the broker once per recipient and case, as the
    recipient (with its own key), for one request."""

    broker: BrokerClient
    keys: Keyring
    _read: dict[tuple[str, str], list[NextStepOut] | None] = field(default_factory=dict)

    async def of(self, recipient: str, case_ref: str) -> list[NextStepOut] | None:
        """``None`` when the broker could not say (down, or the case is not the
        recipient's there)."""
        key = (recipient, case_ref)
        if key not in self._read:
            self._read[key] = await self._ask(recipient, case_ref)
        return self._read[key]

    async def _ask(self, recipient: str, case_ref: str) -> list[NextStepOut] | None:
        keys = self.keys.current.get(recipient)
        if keys is None:  # pragma: no cover - the caller reads its own organisations' only
            return None
        try:
            return next_steps_of(await case_view(self.broker, keys.signing, case_ref), recipient)
        except CaseViewUnreadable as exc:
            log.warning("next_steps_unavailable", broker_status=exc.status)
            return None


async def view(
    row: ReceivedMessage, retention: timedelta, steps: NextSteps | None
) -> ReceivedMessageOut:
    """One received message as the API shows it; ``steps`` None: next steps not asked."""
    next_steps = await steps.of(row.recipient, row.case_ref) if steps is not None else None
    unavailable = None
    if steps is None:
        unavailable = NOT_ASKED
    elif next_steps is None:
        unavailable = BROKER_UNAVAILABLE
    return ReceivedMessageOut(
        **received_view(row, retention).model_dump(),
        consent_ref=row.consent_ref,
        next_steps=next_steps,
        next_steps_unavailable=unavailable,
    )


async def views(
    rows: Sequence[ReceivedMessage], retention: timedelta, steps: NextSteps | None
) -> list[ReceivedMessageOut]:
    return [await view(row, retention, steps) for row in rows]
