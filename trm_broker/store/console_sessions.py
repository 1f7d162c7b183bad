"""The auditors' console's sign-in challenges and sessions (issue 20).

A challenge is issued to a registered signing key, kept as its SHA-256 digest until it
expires or is used: :func:`take_challenge` deletes it as it finds it, so a link signs in once.
A session is kept the same way: the browser holds the id, the broker only its digest
(a digest of 256 random bits cannot be reversed, so a copy of the database signs nobody in).

A session ends at sign-out, after ``idle`` without a page opened, ``absolute`` after sign-in
(OWASP Session Management: idle and absolute timeouts), or as soon as the key that signed in
is revoked, expires, or its participant is no longer an auditor or operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.participants import ParticipantKind
from trm_broker.store.models import (
    ConsoleChallenge,
    ConsoleSession,
    Participant,
    ParticipantKey,
)
from trm_broker.store.page_sessions import (
    Lifetimes,
    digest,
    forget_ended,
    new_secret,
    seen_now,
)
from trm_broker.store.participants import is_usable

__all__ = ["Lifetimes", "digest"]

#: Who may sign in to the console at all (pages narrow it further).
CONSOLE_KINDS = frozenset({ParticipantKind.AUDITOR, ParticipantKind.OPERATOR})


@dataclass(frozen=True)
class ConsoleUser:
    """Who a live session belongs to."""

    participant_id: str
    kind: ParticipantKind
    country: str
    kid: str
    csrf_secret: str


async def issue_challenge(session: AsyncSession, kid: str, now: datetime, ttl: timedelta) -> str:
    """A new challenge for the key ``kid``; returns it (only its digest is stored)."""
    await session.execute(delete(ConsoleChallenge).where(ConsoleChallenge.expires_at <= now))
    challenge = new_secret()
    session.add(ConsoleChallenge(digest=digest(challenge), kid=kid, expires_at=now + ttl))
    await session.flush()
    return challenge


async def take_challenge(session: AsyncSession, challenge: str, now: datetime) -> str | None:
    """The key a live challenge was issued to, deleting the challenge (used once);
    ``None`` for an unknown, used or expired one."""
    found = await session.get(ConsoleChallenge, digest(challenge))
    if found is None:
        return None
    await session.delete(found)
    await session.flush()
    return found.kid if now < found.expires_at else None


async def begin(session: AsyncSession, kid: str, now: datetime, lifetimes: Lifetimes) -> str:
    """A new session signed in with ``kid``; returns its id (for the cookie, never stored)."""
    await forget_ended(session, ConsoleSession, now, lifetimes)
    session_id = new_secret()
    session.add(
        ConsoleSession(
            digest=digest(session_id),
            kid=kid,
            csrf_secret=new_secret(),
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetimes.absolute,
        )
    )
    await session.flush()
    return session_id


async def resume(
    session: AsyncSession, session_id: str, now: datetime, lifetimes: Lifetimes
) -> ConsoleUser | None:
    """The user of the live session ``session_id``, seen now; ``None`` (and the session
    deleted) if it is unknown, timed out, or its key or participant may no longer sign in."""
    query = (
        select(ConsoleSession, ParticipantKey, Participant)
        .join(ParticipantKey, ParticipantKey.kid == ConsoleSession.kid)
        .join(Participant, Participant.id == ParticipantKey.participant_id)
        .where(ConsoleSession.digest == digest(session_id))
    )
    row = (await session.execute(query)).first()
    if row is None:
        return None
    found, key, participant = row[0], row[1], row[2]
    allowed = is_usable(key, now) and participant.kind in CONSOLE_KINDS
    if not await seen_now(session, found, now, lifetimes, allowed=allowed):
        return None
    return ConsoleUser(
        participant.id, participant.kind, participant.country, key.kid, found.csrf_secret
    )


async def end(session: AsyncSession, session_id: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.digest == digest(session_id)))
