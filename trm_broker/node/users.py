"""The node's user accounts: people of the organisations it serves, with a role each, and
their API tokens (and, if they use one, a password).

Organisations are the participants the node serves (its key files). A token is 256 random
bits, shown once when it is made and stored only as its SHA-256 digest: a digest of so much
randomness cannot be reversed or guessed, so a slow hash would add nothing. A password is
chosen by a person, so it is stored as an argon2id hash (RFC 9106), with argon2-cffi's
parameters.

Every query here is one the commands (`trm-broker node users …`) or the access check
(:mod:`trm_broker.node.access`) make; the caller's session commits.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from trm_broker.node.store import NodeBase
from trm_broker.store.models import UTCDateTime, stored_enum

#: The user name the administrator's token acts under (no user account may take it).
ADMINISTRATOR = "admin"
#: User names: what the audit log shows as who acted (a login name, not a person's name).
USER_NAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
#: Every user token starts with it, so a leaked one is recognised (secret scanners).
TOKEN_PREFIX = "trmu_"  # noqa: S105 (a prefix, not a secret)
_HASHER = PasswordHasher()  # argon2id, RFC 9106's low-memory profile


class Role(StrEnum):
    """What a user may do, for their own organisation only."""

    CASE_WORKER = "case_worker"  # read, and send as the organisation
    SUPERVISOR = "supervisor"  # read, and read the node's audit log; no sending
    READ_ONLY = "read_only"  # read


class NodeUser(NodeBase):
    __tablename__ = "node_users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    organisation: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[Role] = mapped_column(stored_enum(Role, "role", 16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Set by `users disable`: every token of the user is refused from then on.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: argon2id (PHC string); NULL: the user has no password.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    #: The web app's language the user chose (a catalog's code); NULL: not chosen.
    language: Mapped[str | None] = mapped_column(String(16))
    #: The IANA time zone the user chose for dates; NULL: the browser's at sign-in.
    time_zone: Mapped[str | None] = mapped_column(String(64))


class NodeUserToken(NodeBase):
    __tablename__ = "node_user_tokens"

    #: The token's public name (``tok-…``): what `token revoke` takes and the list shows.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("node_users.name"), index=True)
    #: SHA-256 of the token, hex: the token itself is never stored.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: NULL for a token made by a command: it lasts until revoked. A token a password
    #: login made (``POST /login``) expires.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UserError(ValueError):
    """A user command that cannot be carried out; the text says what to do instead."""


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is shown once, and only ``id`` is kept in the clear."""

    id: str
    token: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> IssuedToken:
    return IssuedToken(f"tok-{secrets.token_hex(6)}", TOKEN_PREFIX + secrets.token_urlsafe(32))


async def user(session: AsyncSession, name: str) -> NodeUser | None:
    return await session.get(NodeUser, name)


async def _existing(session: AsyncSession, name: str) -> NodeUser:
    found = await user(session, name)
    if found is None:
        raise UserError(f"There is no user {name}: `trm-broker node users list` shows them.")
    return found


async def add_user(
    session: AsyncSession,
    name: str,
    organisation: str,
    role: Role,
    now: datetime,
    *,
    label: str | None = None,
) -> IssuedToken:
    """A new user and their first API token."""
    if await user(session, name) is not None:
        raise UserError(f"The user {name} exists already: choose another name.")
    session.add(NodeUser(name=name, organisation=organisation, role=role, created_at=now))
    await session.flush()
    return await new_token(session, name, now, label=label)


async def new_token(
    session: AsyncSession,
    name: str,
    now: datetime,
    *,
    label: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedToken:
    found = await _existing(session, name)
    if found.disabled_at is not None:
        raise UserError(f"The user {name} is disabled: a token for them would be refused.")
    issued = _new_token()
    session.add(
        NodeUserToken(
            id=issued.id,
            user_name=name,
            digest=token_digest(issued.token),
            label=label,
            created_at=now,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return issued


async def revoke_token(session: AsyncSession, token_id: str, now: datetime) -> NodeUserToken:
    token = await session.get(NodeUserToken, token_id)
    if token is None:
        raise UserError(
            f"There is no token {token_id}: `trm-broker node users tokens NAME` lists a user's."
        )
    if token.revoked_at is None:
        token.revoked_at = now
    return token


async def disable(session: AsyncSession, name: str, now: datetime) -> NodeUser:
    found = await _existing(session, name)
    if found.disabled_at is None:
        found.disabled_at = now
    return found


async def enable(session: AsyncSession, name: str) -> NodeUser:
    found = await _existing(session, name)
    found.disabled_at = None
    return found


async def set_password(session: AsyncSession, name: str, password: str) -> None:
    found = await _existing(session, name)
    if len(password) < 12:
        raise UserError("Choose a password of at least 12 characters.")
    found.password_hash = _HASHER.hash(password)


async def set_preferences(
    session: AsyncSession, name: str, language: str | None, time_zone: str | None
) -> None:
    """The user's chosen language and time zone (``None``: not chosen), checked by the
    caller against the languages and zones the node has."""
    found = await _existing(session, name)
    found.language = language
    found.time_zone = time_zone


def password_matches(account: NodeUser | None, password: str) -> bool:
    """Whether ``password`` is the user's (argon2id); False for no user, or one without a
    password, after the same work (no timing tells who exists or has one)."""
    if account is None or account.password_hash is None:
        _HASHER.hash(password)
        return False
    try:
        return _HASHER.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def users(session: AsyncSession) -> Sequence[NodeUser]:
    return (await session.scalars(select(NodeUser).order_by(NodeUser.name))).all()


async def tokens(session: AsyncSession, name: str | None = None) -> Sequence[NodeUserToken]:
    query = select(NodeUserToken).order_by(NodeUserToken.created_at, NodeUserToken.id)
    if name is not None:
        query = query.where(NodeUserToken.user_name == name)
    return (await session.scalars(query)).all()


async def any_user(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(func.count()).select_from(NodeUser)))


@dataclass(frozen=True)
class TokenHolder:
    """Whom a presented token belongs to, and whether it may still be used."""

    user: NodeUser
    token: NodeUserToken

    def usable(self, now: datetime) -> bool:
        expires_at = self.token.expires_at
        return (
            self.token.revoked_at is None
            and self.user.disabled_at is None
            and (expires_at is None or now < expires_at)
        )


async def holder(session: AsyncSession, token: str) -> TokenHolder | None:
    """The user whose token this is (looked up by digest: a unique index, no timing on
    the token's value), usable or not; ``None``: no such token."""
    query = (
        select(NodeUserToken, NodeUser)
        .join(NodeUser, NodeUser.name == NodeUserToken.user_name)
        .where(NodeUserToken.digest == token_digest(token))
    )
    row = (await session.execute(query)).first()
    return None if row is None else TokenHolder(user=row[1], token=row[0])
