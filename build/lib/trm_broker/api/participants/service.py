"""Registering participants and reading the registry."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.auth import Caller
from trm_broker.api.participants.schemas import (
    ChangeOut,
    ChangeProof,
    KeyOut,
    KeyRotationIn,
    ParticipantIn,
    ParticipantOut,
    SignedStatement,
)
from trm_broker.crypto import key_statements
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode, sha256_digest
from trm_broker.crypto.errors import MalformedError, VerificationError
from trm_broker.crypto.keys import (
    ENCRYPTION_ALGS,
    HYBRID_PUBLIC_LENGTH,
    check_ed25519_public,
    check_encryption_public,
    key_id,
    load_ed25519_public,
)
from trm_broker.domain.ids import uuid7
from trm_broker.domain.inbox_url import InboxPolicy, InboxRefused
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.domain.participants import KeyUse, ParticipantKind
from trm_broker.store import ledger, registry_changes
from trm_broker.store import participants as registry
from trm_broker.store.models import Participant, ParticipantKey, RegistryChange
from trm_broker.web.problems import Conflict, InvalidRequest, NotFound
from trm_broker.web.resolve import resolve


def _kid(alg: str, public: str, claimed: str | None) -> str:
    try:
        raw = b64url_decode(public)
    except MalformedError as exc:
        raise InvalidRequest(f"The {alg} public key is not unpadded base64url.") from exc
    length = HYBRID_PUBLIC_LENGTH if alg == "MLKEM768-X25519" else 32
    if len(raw) != length:
        raise InvalidRequest(f"An {alg} public key is {length} bytes; this one has {len(raw)}.")
    try:
        # A small-order Ed25519 key lets anyone forge signatures; an X25519 one gives an
        # all-zero shared secret, so nothing could be sealed to it (RFC 7748 §6.1). An
        # ML-KEM-768 key must pass the FIPS 203 §7.2 modulus check.
        if alg == "Ed25519":
            check_ed25519_public(raw)
        else:
            check_encryption_public(alg, raw)
    except MalformedError as exc:
        raise InvalidRequest(
            f"The {alg} public key is weak or invalid ({exc}); "
            "generate a new key set with `trm-broker keys new`."
        ) from exc
    kid = key_id(alg, raw)
    if claimed is not None and claimed != kid:
        raise InvalidRequest(f"The {alg} kid must be the key's RFC 7638 thumbprint, {kid}.")
    return kid


async def _check_statements(
    session: AsyncSession,
    caller: Caller,
    participant_id: str,
    keys: list[ParticipantKey],
    statements: list[SignedStatement],
) -> None:
    """Key statements sent with a change (docs/design.md §4) must be signed with the key
    that signed the request and state exactly the keys it adds, each once: nodes that pin
    the operator's keys believe a key only with its statement. None at all is accepted
    (an older tool); those nodes will then not believe the keys."""
    if not statements:
        return
    signer = await registry.key(session, caller.kid)
    if signer is None:  # the request was just verified with it
        raise NotFound(f"No key has id {caller.kid}.")
    public = {caller.kid: load_ed25519_public(signer.public_key)}
    fix = (
        "send one key statement per key added, signed with the operator key that signs "
        "the request (`trm-broker participants add` and `rotate` do)"
    )
    try:
        stated = [key_statements.verify(s.model_dump(), public) for s in statements]
    except VerificationError as exc:
        raise InvalidRequest(f"A key statement does not verify ({exc.code.value}): {fix}.") from exc
    added = [{"kid": k.kid, "use": k.use, "alg": k.alg, "public": k.public_key} for k in keys]
    if len(stated) != len(added) or not all(
        any(statement.states(participant_id, key) for statement in stated) for key in added
    ):
        raise InvalidRequest(
            f"The key statements do not state the keys added to {participant_id}: {fix}."
        )


async def check_inbox(url: str, policy: InboxPolicy) -> None:
    """Refuse inbox URLs the broker must not call (docs/design.md §4; no internal hosts)."""
    try:
        host = policy.check_url(url)
        # A name that does not resolve yet is accepted; it is checked again at each push.
        policy.check_addresses(await resolve(host))
    except InboxRefused as exc:
        raise InvalidRequest(f"inbox_url refused: {exc}.") from exc


async def _record(
    session: AsyncSession,
    action: EventType,
    participant_id: str,
    kid: str | None,
    now: datetime,
    caller: Caller | None,
) -> None:
    """Keep the operator's signed request beside the change it made (docs/design.md §4), and
    record the change in the ledger (§9). ``caller`` is None only for the bootstrap."""
    participant = await registry.get(session, participant_id)
    if participant is None:
        raise NotFound(f"No participant has id {participant_id}.")
    proof = caller.proof if caller is not None else None
    change = RegistryChange(
        id=str(uuid7()),
        recorded_at=now,
        action=action,
        participant_id=participant_id,
        kid=kid,
        operator_id=caller.participant_id if caller is not None else participant_id,
        operator_kid=caller.kid if caller is not None else (kid or ""),
        method=proof.method if proof else None,
        target_uri=proof.target_uri if proof else None,
        content_digest=proof.content_digest if proof else None,
        signature_input=proof.signature_input if proof else None,
        signature=proof.signature if proof else None,
        body=proof.body if proof else None,
    )
    registry_changes.add(session, change)
    ledger.append(
        session,
        LedgerEvent(
            action,
            now,
            parties=(participant_id,),
            countries=(participant.country,),
            facts={
                "participant": participant_id,
                "kind": participant.kind,
                "kid": kid,
                "change_id": change.id,
                "operator": change.operator_id,
                "operator_kid": change.operator_kid,
                # The signed request, as `changes[].proof` shows it, by digest.
                "proof_digest": sha256_digest(canonical_json(_proof(change).model_dump()))
                if proof
                else None,
            },
        ),
    )
    await session.flush()


async def register(
    session: AsyncSession, new: ParticipantIn, now: datetime, policy: InboxPolicy, caller: Caller
) -> ParticipantOut:
    if new.inbox_url is not None:
        await check_inbox(str(new.inbox_url), policy)
    if await registry.get(session, new.id) is not None:
        raise Conflict(f"Participant {new.id} is already registered.")
    keys = [
        ParticipantKey(
            kid=_kid("Ed25519", new.keys.signing.public, new.keys.signing.kid),
            participant_id=new.id,
            use=KeyUse.SIG,
            alg="Ed25519",
            public_key=new.keys.signing.public,
            valid_from=now,
        ),
        ParticipantKey(
            kid=_kid(new.keys.encryption.alg, new.keys.encryption.public, new.keys.encryption.kid),
            participant_id=new.id,
            use=KeyUse.ENC,
            alg=new.keys.encryption.alg,
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
        kind=new.kind,
        country=new.country,
        inbox_url=str(new.inbox_url) if new.inbox_url else None,
        created_at=now,
    )
    await _check_statements(session, caller, new.id, keys, new.statements)
    registry.add(session, participant, keys)
    await session.flush()
    await _record(session, EventType.PARTICIPANT_REGISTERED, new.id, None, now, caller)
    await session.flush()
    return await participant_out(session, new.id)


class OperatorExists(Exception):
    """The registry already has an operator: the next ones are added through the API."""


async def bootstrap_operator(
    session: AsyncSession, participant_id: str, country: str, public: dict[str, Any], now: datetime
) -> None:
    """Register the first operator straight into the database (``trm-broker operator init``).

    Nobody can sign for this change yet, so it is recorded without a request proof; every
    later change is signed by an operator the registry already knows.
    """
    if await registry.any_of_kind(session, ParticipantKind.OPERATOR):
        raise OperatorExists("an operator is already registered")
    new = ParticipantIn.model_validate(
        {"id": participant_id, "kind": "operator", "country": country, "keys": public}
    )
    if await registry.get(session, participant_id) is not None:
        raise OperatorExists(f"participant {participant_id} already exists")
    signing_kid = _kid("Ed25519", new.keys.signing.public, new.keys.signing.kid)
    registry.add(
        session,
        Participant(
            id=participant_id,
            kind=ParticipantKind.OPERATOR,
            country=new.country,
            inbox_url=None,
            created_at=now,
        ),
        [
            ParticipantKey(
                kid=signing_kid,
                participant_id=participant_id,
                use=KeyUse.SIG,
                alg="Ed25519",
                public_key=new.keys.signing.public,
                valid_from=now,
            ),
            ParticipantKey(
                kid=_kid(
                    new.keys.encryption.alg, new.keys.encryption.public, new.keys.encryption.kid
                ),
                participant_id=participant_id,
                use=KeyUse.ENC,
                alg=new.keys.encryption.alg,
                public_key=new.keys.encryption.public,
                valid_from=now,
            ),
        ],
    )
    await session.flush()
    await _record(session, EventType.OPERATOR_BOOTSTRAPPED, participant_id, signing_kid, now, None)


_ALGS_FOR_USE: dict[KeyUse, tuple[str, ...]] = {
    KeyUse.SIG: ("Ed25519",),
    KeyUse.ENC: ENCRYPTION_ALGS,
}


async def rotate_key(
    session: AsyncSession, participant_id: str, new: KeyRotationIn, now: datetime, caller: Caller
) -> ParticipantOut:
    """Add a key; the participant's usable keys of that use expire after the overlap (§4)."""
    if await registry.get(session, participant_id) is None:
        raise NotFound(f"No participant has id {participant_id}.")
    use = KeyUse(new.use)
    if new.alg not in _ALGS_FOR_USE[use]:
        raise InvalidRequest(f"A {use} key must be {' or '.join(_ALGS_FOR_USE[use])}.")
    kid = _kid(new.alg, new.public, new.kid)
    if await registry.key(session, kid) is not None:
        raise Conflict(f"Key {kid} is already registered; a rotation needs a new key.")
    added = ParticipantKey(
        kid=kid,
        participant_id=participant_id,
        use=use,
        alg=new.alg,
        public_key=new.public,
        valid_from=now,
    )
    statements = [new.statement] if new.statement is not None else []
    await _check_statements(session, caller, participant_id, [added], statements)
    overlap_end = now + timedelta(seconds=new.overlap_seconds)
    for old in await registry.usable_keys(session, participant_id, use, now):
        if old.valid_until is None or old.valid_until > overlap_end:
            old.valid_until = overlap_end
    session.add(added)
    await session.flush()
    await _record(session, EventType.KEY_ADDED, participant_id, kid, now, caller)
    await session.flush()
    return await participant_out(session, participant_id)


async def revoke_key(
    session: AsyncSession, participant_id: str, kid: str, now: datetime, caller: Caller
) -> ParticipantOut:
    """Revoke a key at once: signatures by it are refused from now on (§4)."""
    key = await registry.key(session, kid)
    if key is None or key.participant_id != participant_id:
        raise NotFound(f"{participant_id} has no key {kid}.")
    if key.revoked_at is None:
        key.revoked_at = now
        await _record(session, EventType.KEY_REVOKED, participant_id, kid, now, caller)
        await session.flush()
    return await participant_out(session, participant_id)


async def participant_out(session: AsyncSession, participant_id: str) -> ParticipantOut:
    participant = await registry.get(session, participant_id)
    if participant is None:
        raise NotFound(f"No participant has id {participant_id}.")
    keys = await registry.keys_of(session, [participant_id])
    changes = await registry_changes.of_participants(session, [participant_id])
    return _out(participant, list(keys), list(changes))


async def list_registry(session: AsyncSession) -> list[ParticipantOut]:
    participants = await registry.list_all(session)
    keys = await registry.keys_of(session, [p.id for p in participants])
    changes = await registry_changes.of_participants(session, [p.id for p in participants])
    by_owner: dict[str, list[ParticipantKey]] = {}
    for key in keys:
        by_owner.setdefault(key.participant_id, []).append(key)
    changes_of: dict[str, list[RegistryChange]] = {}
    for change in changes:
        changes_of.setdefault(change.participant_id, []).append(change)
    return [_out(p, by_owner.get(p.id, []), changes_of.get(p.id, [])) for p in participants]


def _proof(change: RegistryChange) -> ChangeProof:
    return ChangeProof(
        method=change.method or "",
        target_uri=change.target_uri or "",
        content_digest=change.content_digest or "",
        signature_input=change.signature_input or "",
        signature=change.signature or "",
    )


def _change_out(change: RegistryChange) -> ChangeOut:
    proof = _proof(change) if change.method is not None else None
    return ChangeOut(
        id=change.id,
        action=change.action,
        kid=change.kid,
        operator=change.operator_id,
        operator_kid=change.operator_kid,
        recorded_at=change.recorded_at,
        proof=proof,
        statements=_statements(change),
    )


def _statements(change: RegistryChange) -> list[SignedStatement]:
    """The key statements of a change, as its signed request carried them (checked then)."""
    if change.body is None:
        return []
    try:
        body = json.loads(change.body)
        sent = body.get("statements") or ([body["statement"]] if body.get("statement") else [])
        return [SignedStatement.model_validate(item) for item in sent]
    except (ValueError, TypeError, AttributeError, KeyError):
        return []  # a body written before statements existed, or not an object


def _out(
    participant: Participant, keys: list[ParticipantKey], changes: list[RegistryChange]
) -> ParticipantOut:
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
        changes=[_change_out(change) for change in changes],
    )
