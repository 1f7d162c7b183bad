"""A process's cache of the registry (participants and their keys), never stale by one request.

Every signed request reads the registry: the key it is signed with, its participant, an
envelope's sender, recipient and encryption key. Those rows change rarely (a registration,
a rotation, a revocation), so a broker process keeps them in memory, and reads, at the start
of each request, one number instead: ``registry_version.version``, which database triggers
increment in the same transaction as any change of ``participants`` or ``participant_keys``
(migration 0010), whoever makes it (this process, another broker process, the CLI, SQL by
hand). A number other than the cache's drops the cache; rows are then read again.

So a change committed before a request's version read is seen by that request, in every
process: a revoked key is refused from the very next request. Rows read after the version
are at least as new as it; they are kept only while the cache still holds that version, so
a row read before a change never outlives the change in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.participants import KeyUse, ParticipantKind
from trm_broker.store.direct import Query
from trm_broker.store.models import Participant, ParticipantKey, RegistryVersion, table_of

_VERSION = select(table_of(RegistryVersion).c.version).where(table_of(RegistryVersion).c.id == 1)
_READ_VERSION = Query(_VERSION)
_KEYS = table_of(ParticipantKey).c
_KEY = select(
    _KEYS.kid,
    _KEYS.participant_id,
    _KEYS.use,
    _KEYS.alg,
    _KEYS.public_key,
    _KEYS.valid_from,
    _KEYS.valid_until,
    _KEYS.revoked_at,
).where(_KEYS.kid == bindparam("kid"))
_PARTICIPANTS = table_of(Participant).c
_PARTICIPANT = select(
    _PARTICIPANTS.id, _PARTICIPANTS.kind, _PARTICIPANTS.country, _PARTICIPANTS.inbox_url
).where(_PARTICIPANTS.id == bindparam("id"))

#: Beyond this many rows the cache starts again (a registry has hundreds of participants;
#: the bound only keeps memory finite).
MAX_ROWS = 10_000


@dataclass(frozen=True)
class RegistryKey:
    """A participant key as the registry held it when read."""

    kid: str
    participant_id: str
    use: KeyUse
    alg: str
    public_key: str
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None
    #: What callers derive from the key once (a parsed public key), for as long as it is cached.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class RegistryParticipant:
    id: str
    kind: ParticipantKind
    country: str
    inbox_url: str | None


@dataclass
class RegistryCache:
    """One per process (the broker's state); shared by its requests."""

    version: int = -1
    keys: dict[str, RegistryKey] = field(default_factory=dict)
    participants: dict[str, RegistryParticipant] = field(default_factory=dict)

    def observe(self, version: int) -> None:
        """A request read ``version``: a newer one than the cache's drops every row."""
        if version > self.version:
            self.version = version
            self.keys = {}
            self.participants = {}

    def _full(self) -> bool:
        return len(self.keys) + len(self.participants) >= MAX_ROWS

    def clear(self) -> None:
        self.keys = {}
        self.participants = {}


class Registry:
    """A request's view of the registry, as of the version it read (:func:`view`)."""

    def __init__(self, session: AsyncSession, cache: RegistryCache, version: int) -> None:
        self._session = session
        self._cache = cache
        self.version = version

    def _current(self) -> bool:
        return self._cache.version == self.version

    async def key(self, kid: str) -> RegistryKey | None:
        if self._current():
            found = self._cache.keys.get(kid)
            if found is not None:
                return found
        row = (await self._session.execute(_KEY, {"kid": kid})).first()
        if row is None:
            return None  # unknown ids are not cached: the caller chose them
        key = RegistryKey(
            kid=row.kid,
            participant_id=row.participant_id,
            use=KeyUse(row.use),
            alg=row.alg,
            public_key=row.public_key,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            revoked_at=row.revoked_at,
        )
        if self._current():
            if self._cache._full():
                self._cache.clear()
            self._cache.keys[kid] = key
        return key

    async def participant(self, participant_id: str) -> RegistryParticipant | None:
        if self._current():
            found = self._cache.participants.get(participant_id)
            if found is not None:
                return found
        row = (await self._session.execute(_PARTICIPANT, {"id": participant_id})).first()
        if row is None:
            return None
        participant = RegistryParticipant(
            id=row.id, kind=ParticipantKind(row.kind), country=row.country, inbox_url=row.inbox_url
        )
        if self._current():
            if self._cache._full():
                self._cache.clear()
            self._cache.participants[participant_id] = participant
        return participant


async def view(session: AsyncSession, cache: RegistryCache) -> Registry:
    """Read the registry's version (one small query) and return the request's view of it."""
    version = int((await _READ_VERSION.one(session, {}))[0])
    cache.observe(version)
    return Registry(session, cache, version)


def is_usable(key: RegistryKey, now: datetime) -> bool:
    """Whether a key may be used at ``now``: not revoked, inside its validity."""
    if key.revoked_at is not None or key.valid_from > now:
        return False
    return key.valid_until is None or key.valid_until > now
