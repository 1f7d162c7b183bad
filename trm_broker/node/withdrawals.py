"""Data received under a withdrawn consent (docs/node.md, "When consent is withdrawn"):
restricted at once, its content deleted once the node's retention has passed.

The node learns of a withdrawal in one of three ways, and acts the same on each:

1. a ``consent_withdrawal`` message arrives (to the destination focal point): its
   ``consent_ref`` names the consent withdrawn;
2. one of its participants withdraws a consent through this node (it registered it);
3. a ``consent_withdrawn`` alert at the broker, for the parties that get no such message
   (the receiving organisation, or a node that missed it): the node reads the case at the
   broker (`GET /v1/cases/{case_ref}`), whose ``consents`` say which were withdrawn.

It then records the consent as withdrawn and restricts every message of the case it received
under it: the content is kept, unread (the case workers' API withholds it), and deleted by
:meth:`WithdrawalWatch.purge_once` after ``TRM_NODE_WITHDRAWN_RETENTION_SECONDS``. A message
that arrives later under a consent already known as withdrawn is restricted on arrival.

Logs name ids, counts and error classes only: never a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.domain.envelope import CASE_REF_PATTERN, CONSENT_REF_PATTERN
from trm_broker.domain.messages import MessageType
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.keyring import Keyring
from trm_broker.node.store import HandledAlert, ReceivedMessage, WithdrawnConsent

log = structlog.get_logger("trm_broker.node.withdrawals")

#: Why a received message is restricted (``node_received.restriction``).
RESTRICTION = "consent_withdrawn"
#: How the node learned of a withdrawal (``node_withdrawn_consents.learned_from``).
FROM_MESSAGE, FROM_CASE_WORKER, FROM_ALERT = "message", "case_worker", "alert"
ALERT_KIND = "consent_withdrawn"


async def learned(
    session: AsyncSession, case_ref: str, consent_ref: str, now: datetime, source: str
) -> int:
    """Record that ``consent_ref`` (of ``case_ref``) was withdrawn and restrict what this node
    received under it; how many messages were newly restricted. Idempotent. The
    ``consent_withdrawal`` messages themselves stay readable: they carry the notice."""
    if await session.get(WithdrawnConsent, consent_ref) is None:
        session.add(
            WithdrawnConsent(
                consent_ref=consent_ref, case_ref=case_ref, learned_at=now, learned_from=source
            )
        )
    result = await session.execute(
        update(ReceivedMessage)
        .where(
            ReceivedMessage.case_ref == case_ref,
            ReceivedMessage.consent_ref == consent_ref,
            ReceivedMessage.restricted_at.is_(None),
            ReceivedMessage.type != MessageType.CONSENT_WITHDRAWAL,
        )
        .values(restricted_at=now, restriction=RESTRICTION)
        .execution_options(synchronize_session=False)
    )
    restricted = int(getattr(result, "rowcount", 0) or 0)
    log.info(
        "consent_withdrawal_learned", consent_ref=consent_ref, via=source, restricted=restricted
    )
    return restricted


#: Whether a consent was withdrawn (asked of every message that arrives): built once.
_WITHDRAWN = select(WithdrawnConsent.consent_ref).where(
    WithdrawnConsent.consent_ref == bindparam("ref")
)


async def on_arrival(session: AsyncSession, row: ReceivedMessage, now: datetime) -> None:
    """A message about to be stored (``row``, not yet in the session): a withdrawal restricts
    what came under its consent; a message under a consent already withdrawn is stored
    restricted."""
    if row.consent_ref is None:
        return
    if row.type is MessageType.CONSENT_WITHDRAWAL:
        await learned(session, row.case_ref, row.consent_ref, now, FROM_MESSAGE)
    elif (await session.execute(_WITHDRAWN, {"ref": row.consent_ref})).first() is not None:
        row.restricted_at, row.restriction = now, RESTRICTION


def delete_after(row: ReceivedMessage, retention: timedelta) -> datetime | None:
    return row.restricted_at + retention if row.restricted_at is not None else None


def notice(row: ReceivedMessage, retention: timedelta) -> str | None:
    """What the case worker is told of a restricted message, in a sentence."""
    until = delete_after(row, retention)
    if until is None:
        return None
    if row.purged_at is not None:
        return (
            "The person withdrew consent: this message's content was deleted on "
            f"{_day(row.purged_at)}."
        )
    return (
        "The person withdrew consent: this message's content is kept, unread, until "
        f"{_day(until)}, then deleted."
    )


def _day(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


async def purge(session: AsyncSession, now: datetime, retention: timedelta) -> int:
    """Delete the content of every restricted message whose retention has passed."""
    result = await session.execute(
        update(ReceivedMessage)
        .where(
            ReceivedMessage.restricted_at.is_not(None),
            ReceivedMessage.restricted_at <= now - retention,
            ReceivedMessage.payload.is_not(None),
        )
        .values(payload=None, purged_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


class WithdrawalWatch:
    """The node's background loop for withdrawn consents: every ``interval`` seconds, it asks
    the broker for each participant's ``consent_withdrawn`` alerts, restricts what came under
    the consents they name, and deletes the content whose retention has passed.

    ``start`` it, then ``stop`` it on shutdown. A failure (the broker away, a refusal) is
    logged and tried again at the next round; an alert is marked handled only once its case
    was read and the restriction committed."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keys: Keyring,
        broker: BrokerClient,
        *,
        retention: timedelta,
        interval: float,
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._broker = broker
        self._retention = retention
        self._interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="withdrawal-watch")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        structlog.contextvars.clear_contextvars()
        while not self._stopping.is_set():
            for participant in self._keys.participants():
                try:
                    await self.poll_once(participant)
                except Exception as exc:  # the loop must outlive any one failure
                    log.warning(
                        "withdrawal_alerts_failed",
                        participant=participant,
                        error=type(exc).__name__,
                        status=getattr(exc, "status", None),
                    )
            try:
                await self.purge_once(datetime.now(UTC))
            except Exception as exc:
                log.warning("withdrawn_purge_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()

    async def poll_once(self, participant: str) -> int:
        """Act on ``participant``'s open ``consent_withdrawn`` alerts not handled yet; how
        many messages were newly restricted."""
        signer = self._keys.current[participant].signing
        alerts = [
            alert
            for alert in await self._broker.open_alerts(signer)
            if alert.get("kind") == ALERT_KIND
            and _matches(CASE_REF_PATTERN, alert.get("case_ref"))
            and isinstance(alert.get("id"), str)
        ]
        async with self._sessions() as session:
            handled = await _handled(session, [str(a.get("id")) for a in alerts])
        restricted = 0
        for alert in alerts:
            alert_id, case_ref = str(alert.get("id")), str(alert.get("case_ref"))
            if alert_id in handled:
                continue
            try:
                case = await self._broker.case(signer, case_ref)
            except BrokerError as exc:
                if exc.status != 404:  # 404: no longer a case this participant may read
                    raise
                case = {}
            restricted += await self._restrict(alert_id, case_ref, _withdrawn(case))
        return restricted

    async def _restrict(self, alert_id: str, case_ref: str, consents: Sequence[str]) -> int:
        now = datetime.now(UTC)
        async with self._sessions() as session:
            try:
                restricted = 0
                for consent_ref in consents:
                    restricted += await learned(session, case_ref, consent_ref, now, FROM_ALERT)
                session.add(HandledAlert(alert_id=alert_id, handled_at=now))
                await session.commit()
            except IntegrityError:  # learned at the same moment another way: next round
                await session.rollback()
                return 0
        return restricted

    async def purge_once(self, now: datetime) -> int:
        """Delete the content of restricted messages past the retention; how many."""
        async with self._sessions() as session:
            deleted = await purge(session, now, self._retention)
            await session.commit()
            if deleted and session.get_bind().dialect.name == "sqlite":
                # secure_delete zeroes the freed pages in the file; the write-ahead log
                # still holds the old ones until it is checkpointed and emptied.
                await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        if deleted:
            log.info("withdrawn_payloads_deleted", count=deleted)
        return deleted


async def _handled(session: AsyncSession, alert_ids: list[str]) -> set[str]:
    if not alert_ids:
        return set()
    query = select(HandledAlert.alert_id).where(HandledAlert.alert_id.in_(alert_ids))
    return set((await session.scalars(query)).all())


def _withdrawn(case: dict[str, Any]) -> list[str]:
    """The ids of the case's withdrawn consents, as `GET /v1/cases/{case_ref}` lists them."""
    consents = case.get("consents")
    if not isinstance(consents, list):
        return []
    return [
        str(c["id"])
        for c in consents
        if isinstance(c, dict)
        and _matches(CONSENT_REF_PATTERN, c.get("id"))
        and c.get("withdrawn_at")
    ]


def _matches(pattern: str, value: object) -> bool:
    """``value`` is an id of that form (the broker's answer is checked like any input: a
    case reference goes into a request path)."""
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None
