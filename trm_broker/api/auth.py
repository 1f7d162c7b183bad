"""Who is calling: every non-public call is signed with a registry key (RFC 9421).

The signature is checked before any endpoint work, in one dependency every protected
route declares, so no route can forget it; reads are then scoped to the caller in the
queries themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.deps import Session, State
from trm_broker.api.rate_limits import CHARGED
from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.http_signatures import RequestSignatureError, SignedRequest, signature_keyid
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.domain.participants import KeyUse, ParticipantKind
from trm_broker.store import nonces, registry_cache
from trm_broker.store.registry_cache import Registry, RegistryKey
from trm_broker.web.problems import Forbidden, Problem, Unauthenticated
from trm_broker.web.refusals import request_problem
from trm_broker.web.signed_request_check import header_lines, verify_signed_request

_PRUNE_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class RequestProof:
    """The signed parts of a request, kept where a change must stay provable (registry)."""

    method: str
    target_uri: str
    content_digest: str
    signature_input: str
    signature: str
    body: bytes


@dataclass(frozen=True)
class PendingNonce:
    """A verified request's nonce that its endpoint spends in its own transaction
    (:func:`defers_nonce`)."""

    keyid: str
    nonce: str
    created: datetime
    window: timedelta
    #: Also forget expired nonces, in the same transaction (once a minute per process).
    prune_at: datetime | None = None


@dataclass(frozen=True)
class Caller:
    participant_id: str
    kind: ParticipantKind
    country: str
    kid: str
    proof: RequestProof
    #: The registry as this request read it (its version read once, rows cached).
    registry: Registry | None = field(default=None, compare=False, repr=False)
    #: Set for an endpoint that spends the nonce itself (:func:`defers_nonce`).
    pending_nonce: PendingNonce | None = field(default=None, compare=False, repr=False)

    @property
    def body(self) -> bytes:
        return self.proof.body


_UNSIGNED = (
    "Sign the request with HTTP Message Signatures (RFC 9421) using your registry "
    "signing key, as contracts/README.md describes."
)


def _unauthenticated() -> Unauthenticated:
    return Unauthenticated(_UNSIGNED)


_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])
#: Endpoints that spend their caller's nonce in the transaction of their own change.
_DEFERRING: set[Callable[..., Any]] = set()


def defers_nonce(endpoint: _Endpoint) -> _Endpoint:
    """Mark an endpoint that spends its caller's nonce itself, in the one transaction of its
    change (the accept path: one commit per accepted message, issue 21). It must call
    :func:`spend_nonce` before it commits, and :func:`spend_after_refusal` when it answers
    anything else: every verified request's nonce is spent, whatever the answer."""
    _DEFERRING.add(endpoint)
    return endpoint


def _replayed(keyid: str) -> Problem:
    return request_problem(
        RequestSignatureError(
            "This signed request was already received; sign every request afresh.",
            code=Code.REPLAYED,
            kid=keyid,
        )
    )


async def spend_nonce(session: AsyncSession, caller: Caller) -> None:
    """Spend a deferred nonce in the session's transaction (committed with it); a nonce spent
    before is a replay: 401, as :func:`signed_caller` answers it."""
    pending = caller.pending_nonce
    if pending is None:
        return
    if pending.prune_at is not None:
        await nonces.prune(session, pending.prune_at)  # only nonces too old to replay
    if not await nonces.spend(
        session, pending.keyid, pending.nonce, pending.created, pending.window
    ):
        raise _replayed(pending.keyid)


async def spend_after_refusal(session: AsyncSession, caller: Caller) -> None:
    """After a refusal rolled the endpoint's transaction back: spend the nonce on its own,
    so the refused request cannot be replayed either. A replay racing this one has spent it
    already: the answer is then the replay's 401."""
    if caller.pending_nonce is None:
        return
    await session.rollback()
    await spend_nonce(session, caller)
    await session.commit()


async def signed_caller(request: Request, state: State, session: Session) -> Caller:
    """Authenticate a request by its ``trm`` signature, then spend its nonce.

    1-4. The check a node makes of the broker's pushes too
       (``web/signed_request_check.verify_signed_request``): read the body (bounded: 413 before
       any parsing); the key must be a registered signing key, not revoked, inside its
       validity; verify signature, content digest and time window; spend the nonce (one
       seen before within the window is a replay).
    5. Spend a token of the participant's rate limit; a refusal spends one of the address's.
    """
    request.scope[CHARGED] = True
    try:
        await _refuse_early_over_limit(request, state, session)
        caller = await _authenticate(request, state, session)
    except Problem:
        state.rate_limits.charge_address(request)  # over the limit: 429 instead
        raise
    state.rate_limits.charge_participant(caller.participant_id)
    return caller


async def _refuse_early_over_limit(request: Request, state: State, session: Session) -> None:
    """429 before any signature work when the participant the request names is out of
    tokens already. Nothing is spent from its bucket here (only a verified request spends
    one), so nobody can exhaust another's limit by naming its key; such a request is charged
    to its address, as every refusal is."""
    limiter = state.rate_limits.participants
    if not limiter.enabled:
        return
    try:
        keyid = signature_keyid(header_lines(request))
    except VerificationError:
        return  # refused with its reason by the full check
    if keyid is None:
        return
    registry = await registry_cache.view(session, state.registry)
    request.scope[_REGISTRY] = registry
    key = await registry.key(keyid)
    if key is not None:
        state.rate_limits.refuse_if_exhausted(key.participant_id)


_REGISTRY = "trm.registry"


def _public_key(key: RegistryKey) -> Ed25519PublicKey:
    public = key.derived.get("ed25519")
    if public is None:
        public = key.derived["ed25519"] = load_ed25519_public(key.public_key)
    return public


async def _authenticate(request: Request, state: State, session: Session) -> Caller:
    window = timedelta(seconds=state.settings.clock_skew_seconds)
    registry: Registry | None = request.scope.get(_REGISTRY)
    if registry is None:
        registry = await registry_cache.view(session, state.registry)
    deferred = _route_defers_nonce(request)
    pending: list[PendingNonce] = []

    async def resolve(keyid: str, now: datetime) -> Ed25519PublicKey:
        key = await registry.key(keyid)
        if key is None or key.use is not KeyUse.SIG:
            # The key id is caller-chosen text until found in the registry: never echoed.
            raise VerificationError(
                "The signature's keyid is not a registered signing key.", code=Code.UNKNOWN_KEY
            )
        if key.revoked_at is not None:
            raise VerificationError(
                f"Key {keyid} is revoked; sign with a current key.",
                code=Code.KEY_NOT_USABLE,
                kid=keyid,
            )
        if not registry_cache.is_usable(key, now):
            raise VerificationError(
                f"Key {keyid} is expired or not yet valid; sign with a current key.",
                code=Code.KEY_NOT_USABLE,
                kid=keyid,
            )
        return _public_key(key)

    async def spend(keyid: str, signed: SignedRequest, now: datetime) -> bool:
        last_prune = state.extras.get("nonces_pruned_at")
        prune = last_prune is None or now - last_prune > _PRUNE_EVERY
        if prune:
            state.extras["nonces_pruned_at"] = now
        if deferred:
            # Nothing is written before the endpoint's own transaction (on SQLite a write
            # here would hold the file's lock while the request waits for its turn).
            pending.append(
                PendingNonce(keyid, signed.nonce, signed.created, window, now if prune else None)
            )
            return True
        fresh = await nonces.spend(session, keyid, signed.nonce, signed.created, window)
        if prune:
            await nonces.prune(session, now)
        return fresh

    verified = await verify_signed_request(
        request,
        limit=state.settings.max_envelope_bytes,
        public_url=state.settings.public_url,
        window=window,
        resolve=resolve,
        spend=spend,
        unsigned=_UNSIGNED,
    )
    key = await registry.key(verified.keyid)  # the one resolved: no new query
    participant = await registry.participant(key.participant_id) if key else None
    if participant is None:  # keys cannot outlive their participant (foreign key)
        raise _unauthenticated()
    if not deferred:
        # The nonce is spent even if the call then fails: commit it before any endpoint work.
        await session.commit()
    signed = verified.signed
    return Caller(
        participant_id=participant.id,
        kind=participant.kind,
        country=participant.country,
        kid=verified.keyid,
        proof=RequestProof(
            method=request.method,
            target_uri=verified.target_uri,
            content_digest=signed.content_digest,
            signature_input=signed.signature_input,
            signature=signed.signature,
            body=verified.body,
        ),
        registry=registry,
        pending_nonce=pending[0] if pending else None,
    )


def _route_defers_nonce(request: Request) -> bool:
    route = request.scope.get("route")
    return getattr(route, "endpoint", None) in _DEFERRING


SignedCaller = Annotated[Caller, Depends(signed_caller)]


async def operator(caller: SignedCaller) -> Caller:
    """Registry changes are signed by an operator's key (docs/design.md §4)."""
    if caller.kind is not ParticipantKind.OPERATOR:
        raise Forbidden("Only an operator may change the registry.")
    return caller


OperatorCaller = Annotated[Caller, Depends(operator)]
