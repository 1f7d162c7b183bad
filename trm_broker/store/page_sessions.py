"""What the page apps' sessions share (the node's web app, the broker's console), whichever
database keeps them: ids of 256 random bits of which only the SHA-256 digest is stored (a
copy of the database signs nobody in), and the idle and absolute timeouts (OWASP Session
Management) after which a session is deleted.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, or_
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta


class SessionRow(Protocol):
    last_seen_at: datetime
    expires_at: datetime


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A session id or CSRF secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


async def forget_ended(db: AsyncSession, model: Any, now: datetime, lifetimes: Lifetimes) -> None:
    """Deletes every session of ``model`` past its absolute or idle end."""
    await db.execute(
        delete(model).where(
            or_(model.expires_at <= now, model.last_seen_at <= now - lifetimes.idle)
        )
    )


async def seen_now(
    db: AsyncSession, row: SessionRow, now: datetime, lifetimes: Lifetimes, *, allowed: bool
) -> bool:
    """Whether the session ``row`` is still live (and its owner ``allowed``): marked seen
    now if so, deleted if not."""
    if not allowed or now >= row.expires_at or now >= row.last_seen_at + lifetimes.idle:
        await db.delete(row)
        await db.flush()
        return False
    row.last_seen_at = now
    await db.flush()
    return True
