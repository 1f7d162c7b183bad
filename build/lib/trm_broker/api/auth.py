"""Who is calling: every non-public call is signed with a registry key (RFC 9421).

The signature is checked before any endpoint work, in one dependency every protected
route declares, so no route can forget it; reads are then scoped to the caller in the
queries themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request

from trm_broker.api.deps import Session, State
from trm_broker.api.rate_limits import CHARGED
from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.http_signatures import SignedRequest
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.domain.participants import KeyUse, ParticipantKind
from trm_broker.store import nonces
from trm_broker.store import participants as registry
from trm_broker.web.problems import Forbidden, Problem, Unauthenticated
from trm_broker.web.signed_requests import verify_signed_request

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
class Caller:
    participant_id: str
    kind: ParticipantKind
    country: str
    kid: str
    proof: RequestProof

    @property
    def body(self) -> bytes:
        return self.proof.body


_UNSIGNED = (
    "Sign the request with HTTP Message Signatures (RFC 9421) using your registry "
    "signing key, as contracts/README.md describes."
)


def _unauthenticated() -> Unauthenticated:
    return Unauthenticated(_UNSIGNED)


async def signed_caller(request: Request, state: State, session: Session) -> Caller:
    """Authenticate a request by its ``trm`` signature, then spend its nonce.

    1-4. The check a node makes of the broker's pushes too
       (``web/signed_requests.verify_signed_request``): read the body (bounded: 413 before
       any parsing); the key must be a registered signing key, not revoked, inside its
       validity; verify signature, content digest and time window; spend the nonce (one
       seen before within the window is a replay).
    5. Spend a token of the participant's rate limit; a refusal spends one of the address's.
    """
    request.scope[CHARGED] = True
    try:
        caller = await _authenticate(request, state, session)
    except Problem:
        state.rate_limits.charge_address(request)  # over the limit: 429 instead
        raise
    state.rate_limits.charge_participant(caller.participant_id)
    return caller


async def _authenticate(request: Request, state: State, session: Session) -> Caller:
    window = timedelta(seconds=state.settings.clock_skew_seconds)

    async def resolve(keyid: str, now: datetime) -> Ed25519PublicKey:
        key = await registry.key(session, keyid)
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
        if not registry.is_usable(key, now):
            raise VerificationError(
                f"Key {keyid} is expired or not yet valid; sign with a current key.",
                code=Code.KEY_NOT_USABLE,
                kid=keyid,
            )
        return load_ed25519_public(key.public_key)

    async def spend(keyid: str, signed: SignedRequest, now: datetime) -> bool:
        fresh = await nonces.spend(session, keyid, signed.nonce, signed.created, window)
        last_prune = state.extras.get("nonces_pruned_at")
        if last_prune is None or now - last_prune > _PRUNE_EVERY:
            state.extras["nonces_pruned_at"] = now
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
    key = await registry.key(session, verified.keyid)  # the one resolved: no new query
    participant = await registry.get(session, key.participant_id) if key else None
    if participant is None:  # keys cannot outlive their participant (foreign key)
        raise _unauthenticated()
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
    )


SignedCaller = Annotated[Caller, Depends(signed_caller)]


def operator(caller: SignedCaller) -> Caller:
    """Registry changes are signed by an operator's key (docs/design.md §4)."""
    if caller.kind is not ParticipantKind.OPERATOR:
        raise Forbidden("Only an operator may change the registry.")
    return caller


OperatorCaller = Annotated[Caller, Depends(operator)]
