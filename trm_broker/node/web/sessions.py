"""The web app's sign-in sessions, kept at the node (``node_web_sessions``).

The browser holds a session id (256 random bits) in a ``__Host-`` cookie; the node keeps only
its SHA-256 digest, as it does for API tokens (node/users.py): a digest of so much randomness
cannot be reversed, so a copy of the database signs nobody in. Each session has its own CSRF
secret, the synchronizer token every form of the session carries (OWASP CSRF Prevention
Cheat Sheet, "Synchronizer Token Pattern").

A session ends when its user signs out, when no page was opened for
``TRM_NODE_WEB_SESSION_IDLE_SECONDS``, or ``TRM_NODE_WEB_SESSION_MAX_SECONDS`` after sign-in,
whichever comes first (OWASP Session Management: idle and absolute timeouts). Ended sessions
are deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from trm_broker.node.store import NodeBase
from trm_broker.node.users import NodeUser
from trm_broker.store.models import UTCDateTime
from trm_broker.store.page_sessions import (
    Lifetimes,
    digest,
    forget_ended,
    new_secret,
    seen_now,
)

__all__ = ["Lifetimes", "digest"]

#: The session cookie: ``__Host-`` so it is Secure, host-only and for the path ``/``
#: (RFC 6265bis §4.1.3.2); HttpOnly and SameSite=Strict as it is set.
COOKIE = "__Host-trm_session"


class WebSession(NodeBase):
    __tablename__ = "node_web_sessions"

    #: SHA-256 of the session id, hex: the id itself is never stored.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("node_users.name"), index=True)
    #: The synchronizer token of the session's forms.
    csrf_secret: Mapped[str] = mapped_column(String(64))
    #: The browser's time zone at sign-in (IANA name), for dates; NULL: UTC.
    time_zone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The absolute end: created_at + TRM_NODE_WEB_SESSION_MAX_SECONDS.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


@dataclass(frozen=True)
class OpenSession:
    """A live session and its user, as a page request finds them."""

    session: WebSession
    user: NodeUser


async def begin(
    db: AsyncSession, user_name: str, now: datetime, lifetimes: Lifetimes, time_zone: str | None
) -> str:
    """A new session for ``user_name``; returns its id (for the cookie, never stored)."""
    await forget_ended(db, WebSession, now, lifetimes)
    session_id = new_secret()
    db.add(
        WebSession(
            digest=digest(session_id),
            user_name=user_name,
            csrf_secret=new_secret(),
            time_zone=time_zone,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetimes.absolute,
        )
    )
    await db.flush()
    return session_id


async def resume(
    db: AsyncSession, session_id: str, now: datetime, lifetimes: Lifetimes
) -> OpenSession | None:
    """The live session of ``session_id`` and its enabled user, seen now; ``None`` if
    there is none (unknown, ended, timed out, or its user disabled): it is deleted then."""
    query = (
        select(WebSession, NodeUser)
        .join(NodeUser, NodeUser.name == WebSession.user_name)
        .where(WebSession.digest == digest(session_id))
    )
    row = (await db.execute(query)).first()
    if row is None:
        return None
    found, user = row[0], row[1]
    if not await seen_now(db, found, now, lifetimes, allowed=user.disabled_at is None):
        return None
    return OpenSession(found, user)


async def end(db: AsyncSession, session_id: str) -> None:
    await db.execute(delete(WebSession).where(WebSession.digest == digest(session_id)))
