"""Registering participants and reading the registry."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.participants.schemas import (
    KeyOut,
    KeyRotationIn,
    ParticipantIn,
    ParticipantOut,
)
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import check_ed25519_public, check_x25519_public, key_id
from trm_broker.domain.inbox_url import InboxPolicy, InboxRefused
from trm_broker.store import participants as registry
from trm_broker.store.models import Participant, ParticipantKey
from trm_broker.web.problems import Conflict, InvalidRequest, NotFound
from trm_broker.web.resolve import resolve


def _kid(alg: str, public: str, claimed: str | None) -> str:
    try:
        raw = b64url_decode(public)
    except MalformedError as exc:
        raise InvalidRequest(f"The {alg} public key is not unpadded base64url.") from exc
    if len(raw) != 32:
        raise InvalidRequest(f"An {alg} public key is 32 bytes; this one has {len(raw)}.")
    try:
        # A small-order Ed25519 key lets anyone forge signatures; an X25519 one gives an
        # all-zero shared secret, so nothing could be sealed to it (RFC 7748 §6.1).
        (check_ed25519_public if alg == "Ed25519" else check_x25519_public)(raw)
    except MalformedError as exc:
        raise InvalidRequest(
            f"The {alg} public key is weak or invalid ({exc}); "
            "generate a new key set with `trm-broker keys new`."
        ) from exc
    kid = key_id(alg, raw)
    if claimed is not None and claimed != kid:
        raise InvalidRequest(f"The {alg} kid must be the key's RFC 7638 thumbprint, {kid}.")
    return kid


async def check_inbox(url: str, policy: InboxPolicy) -> None:
    """Refuse inbox URLs the broker must not call (DESIGN.md §4; no internal hosts)."""
    try:
        host = policy.check_url(url)
        # A name that does not resolve yet is accepted; it is checked again at each push.
        policy.check_addresses(await resolve(host))
    except InboxRefused as exc:
        raise InvalidRequest(f"inbox_url refused: {exc}.") from exc


async def register(
    session: AsyncSession, new: ParticipantIn, now: datetime, policy: InboxPolicy
) -> ParticipantOut:
    if new.inbox_url is not None:
        await check_inbox(str(new.inbox_url), policy)
    if await registry.get(session, new.id) is not None:
        raise Conflict(f"Participant {new.id} is already registered.")
    keys = [
        ParticipantKey(
            kid=_kid("Ed25519", new.keys.signing.public, new.keys.signing.kid),
            participant_id=new.id,
            use="sig",
            alg="Ed25519",
            public_key=new.keys.signing.public,
            valid_from=now,
        ),
        ParticipantKey(
            kid=_kid("X25519", new.keys.encryption.public, new.keys.encryption.kid),
            participant_id=new.id,
            use="enc",
            alg="X25519",
            public_key=new.keys.encryption.public,
            valid_from=now,
        ),
    ]
    for key in keys:
        if await registry.key(session, key.kid) is not None:
            raise Conflict(
                f"Key {key.kid} is already registered; every participant needs its own keys."
            )
    participant = Participant(
        id=new.id,
        kind=new.kind.value,
        country=new.country,
        inbox_url=str(new.inbox_url) if new.inbox_url else None,
        created_at=now,
    )
    registry.add(session, participant, keys)
    await session.flush()
    return _out(participant, keys)


_ALG_FOR_USE = {"sig": "Ed25519", "enc": "X25519"}


async def rotate_key(
    session: AsyncSession, participant_id: str, new: KeyRotationIn, now: datetime
) -> ParticipantOut:
    """Add a key; the participant's usable keys of that use expire after the overlap (§4)."""
    if await registry.get(session, participant_id) is None:
        raise NotFound(f"No participant has id {participant_id}.")
    if _ALG_FOR_USE[new.use] != new.alg:
        raise InvalidRequest(f"A {new.use} key must be {_ALG_FOR_USE[new.use]}.")
    kid = _kid(new.alg, new.public, new.kid)
    if await registry.key(session, kid) is not None:
        raise Conflict(f"Key {kid} is already registered; a rotation needs a new key.")
    overlap_end = now + timedelta(seconds=new.overlap_seconds)
    for old in await registry.usable_keys(session, participant_id, new.use, now):
        if old.valid_until is None or old.valid_until > overlap_end:
            old.valid_until = overlap_end
    session.add(
        ParticipantKey(
            kid=kid,
            participant_id=participant_id,
            use=new.use,
            alg=new.alg,
            public_key=new.public,
            valid_from=now,
        )
    )
    await session.flush()
    return await participant_out(session, participant_id)


async def revoke_key(
    session: AsyncSession, participant_id: str, kid: str, now: datetime
) -> ParticipantOut:
    """Revoke a key at once: signatures by it are refused from now on (§4)."""
    key = await registry.key(session, kid)
    if key is None or key.participant_id != participant_id:
        raise NotFound(f"{participant_id} has no key {kid}.")
    if key.revoked_at is None:
        key.revoked_at = now
        await session.flush()
    return await participant_out(session, participant_id)


async def participant_out(session: AsyncSession, participant_id: str) -> ParticipantOut:
    participant = await registry.get(session, participant_id)
    if participant is None:
        raise NotFound(f"No participant has id {participant_id}.")
    return _out(participant, list(await registry.keys_of(session, [participant_id])))


async def list_registry(session: AsyncSession) -> list[ParticipantOut]:
    participants = await registry.list_all(session)
    keys = await registry.keys_of(session, [p.id for p in participants])
    by_owner: dict[str, list[ParticipantKey]] = {}
    for key in keys:
        by_owner.setdefault(key.participant_id, []).append(key)
    return [_out(p, by_owner.get(p.id, [])) for p in participants]


def _out(participant: Participant, keys: list[ParticipantKey]) -> ParticipantOut:
    return ParticipantOut(
        id=participant.id,
        kind=participant.kind,
        country=participant.country,
        delivery="push" if participant.inbox_url else "pull",
        created_at=participant.created_at,
        keys=[
            KeyOut(
                kid=k.kid,
                use=k.use,
                alg=k.alg,
                public=k.public_key,
                valid_from=k.valid_from,
                valid_until=k.valid_until,
                revoked_at=k.revoked_at,
            )
            for k in keys
        ],
    )
