"""The reference NRM node's HTTP app: the broker-facing inbox and the local case-worker API."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import structlog
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker import __version__
from trm_broker.crypto.errors import MalformedError
from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import check_payload
from trm_broker.node import inbox, store
from trm_broker.node.auth import broker_signed_body
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.compose import compose_envelope
from trm_broker.node.keyring import Keyring
from trm_broker.node.schemas import (
    CaseClosureRequest,
    CaseMessage,
    CaseMonitoringRequest,
    ConsentRequest,
    ConsentWithdrawalRequest,
    ReceivedList,
    ReceivedOut,
    ReceptionConfirmationRequest,
    ReferralRequest,
    ReferralResponseRequest,
    ReturnPreparationRequest,
    RiskAssessmentRequest,
    SendRequest,
    SentOut,
)
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine, session_factory
from trm_broker.web import middleware, problems
from trm_broker.web.problems import InvalidRequest, NotConfigured, Problem, Unauthenticated

log = structlog.get_logger("trm_broker.node")


class BrokerRefused(Problem):
    status, slug, title = 502, "broker-refused", "The broker refused the message"


@dataclass
class NodeState:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    keys: Keyring
    broker: BrokerClient


def node_state(request: Request) -> NodeState:
    state: NodeState = request.app.state.node
    return state


State = Annotated[NodeState, Depends(node_state)]


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(db_session)]


def case_worker(state: State, authorization: Annotated[str | None, Header()] = None) -> None:
    """The local API hands out decrypted case data: it needs TRM_NODE_API_TOKEN."""
    configured = state.settings.node_api_token
    if configured is None:
        raise NotConfigured("The local API is disabled: set TRM_NODE_API_TOKEN on the node.")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode(), configured.get_secret_value().encode()
    ):
        raise Unauthenticated("Send the node's API token as `Authorization: Bearer <token>`.")


CaseWorker = Annotated[None, Depends(case_worker)]
CaseRef = Annotated[
    str, Path(pattern=CASE_REF_PATTERN, description="The case's pseudonymous reference.")
]
_CASE_ROUTE: dict[str, Any] = {
    "response_model": SentOut,
    "status_code": 201,
    "tags": ["case workers"],
}


def load_keyring(settings: Settings) -> Keyring:
    if not settings.node_key_files:
        raise SystemExit(
            "Set TRM_NODE_KEY_FILES to the key file(s) of the participants this node serves."
        )
    return Keyring.read(settings.node_key_files)


def create_node_app(settings: Settings, *, broker_http: httpx.AsyncClient | None = None) -> FastAPI:
    """Build the node app; ``broker_http`` replaces the HTTP client used to reach the broker.

    Key files are read when the app starts, so the app (and its OpenAPI) can be built
    without them.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = load_keyring(settings)
        engine = create_engine(settings.node_database_url)
        await store.create_schema(engine)
        broker = BrokerClient(settings.node_broker_url, broker_http)
        app.state.node = NodeState(settings, session_factory(engine), keys, broker)
        log.info("node_started", participants=keys.participants())
        try:
            yield
        finally:
            await broker.aclose()
            await engine.dispose()

    app = FastAPI(title="trm-broker NRM node", version=__version__, lifespan=lifespan)
    problems.install(app)
    middleware.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/inbox", tags=["inbox"])
    async def receive(
        request: Request, state: State, session: Session
    ) -> dict[str, dict[str, str]]:
        """Called by the broker: verify, open, store once, answer a signed acknowledgement."""
        body = await broker_signed_body(request, state.settings, state.broker, session)
        result = await inbox.receive(session, body, state.keys, state.broker)
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()  # delivered twice at once: answer with the stored ack
            result = await inbox.receive(session, body, state.keys, state.broker)
        log.info("message_rejected" if result.rejected else "message_received")
        return {"ack": result.ack}

    @app.get("/messages", response_model=ReceivedList, tags=["case workers"])
    async def received(
        state: State,
        session: Session,
        _: CaseWorker,
        after: Annotated[int | None, Query(ge=0, description="The last seq already read.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ReceivedList:
        """Messages received for this node's participants, decrypted, in arrival order."""
        rows = await store.list_received(session, limit, after)
        return ReceivedList(
            messages=[
                ReceivedOut(
                    seq=r.seq,
                    message_id=r.id,
                    type=r.type,
                    case_ref=r.case_ref,
                    sender=r.sender,
                    recipient=r.recipient,
                    created_at=r.created_at,
                    received_at=r.received_at,
                    header=json.loads(r.header),
                    payload=json.loads(r.payload),
                )
                for r in rows
            ]
        )

    @app.post("/messages", response_model=SentOut, status_code=201, tags=["case workers"])
    async def send(body: SendRequest, state: State, session: Session, _: CaseWorker) -> SentOut:
        """Seal the payload to the recipient, sign the envelope, send it, check the receipt.

        The per-type calls below (`/cases/{case_ref}/<type>`) take the same message with
        a typed header and payload; this one takes any type."""
        return await send_message(state, session, body)

    @app.post("/consents", status_code=201, tags=["case workers"])
    async def register_consent(body: ConsentRequest, state: State, _: CaseWorker) -> dict[str, Any]:
        """Register a consent at the broker, signed by the sending focal point (§7). The
        signed form stays here; only its digest travels."""
        sender = _sender(state, body.sender)
        try:
            return await state.broker.register_consent(
                state.keys.current[sender].signing, body.consent
            )
        except BrokerError as exc:
            raise _refused(exc) from exc

    @app.post("/consents/{consent_id}/withdraw", tags=["case workers"])
    async def withdraw_consent(
        consent_id: str, state: State, _: CaseWorker, sender: str | None = None
    ) -> dict[str, Any]:
        """Withdraw a consent at once (§7)."""
        signer = state.keys.current[_sender(state, sender)].signing
        try:
            return await state.broker.withdraw_consent(signer, consent_id)
        except BrokerError as exc:
            raise _refused(exc) from exc

    @app.get("/cases/{case_ref}", tags=["case workers"])
    async def case_at_broker(
        case_ref: CaseRef, state: State, _: CaseWorker, reader: str | None = None
    ) -> dict[str, Any]:
        """The case's workflow state and timeline at the broker (metadata only)."""
        signer = state.keys.current[_sender(state, reader)].signing
        try:
            return await state.broker.case(signer, case_ref)
        except BrokerError as exc:
            raise _refused(exc) from exc

    # One call per message type (DESIGN.md §6), so nobody hand-builds an envelope.

    @app.post("/cases/{case_ref}/referral", **_CASE_ROUTE)
    async def send_referral(
        case_ref: CaseRef, body: ReferralRequest, state: State, session: Session, _: CaseWorker
    ) -> SentOut:
        """Refer a case to the country of return's focal point."""
        request = _outgoing(MessageType.REFERRAL, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    @app.post("/cases/{case_ref}/referral-response", **_CASE_ROUTE)
    async def send_referral_response(
        case_ref: CaseRef,
        body: ReferralResponseRequest,
        state: State,
        session: Session,
        _: CaseWorker,
    ) -> SentOut:
        """Accept or decline a referral (the destination's focal point)."""
        type = MessageType.REFERRAL_RESPONSE
        request = _outgoing(type, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    @app.post("/cases/{case_ref}/risk-assessment", **_CASE_ROUTE)
    async def send_risk_assessment(
        case_ref: CaseRef,
        body: RiskAssessmentRequest,
        state: State,
        session: Session,
        _: CaseWorker,
    ) -> SentOut:
        """Share a risk assessment and its recommendation."""
        type = MessageType.RISK_ASSESSMENT
        request = _outgoing(type, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    @app.post("/cases/{case_ref}/return-preparation", **_CASE_ROUTE)
    async def send_return_preparation(
        case_ref: CaseRef,
        body: ReturnPreparationRequest,
        state: State,
        session: Session,
        _: CaseWorker,
    ) -> SentOut:
        """Prepare a return with the designated receiving organisation."""
        type = MessageType.RETURN_PREPARATION
        request = _outgoing(type, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    @app.post("/cases/{case_ref}/reception-confirmation", **_CASE_ROUTE)
    async def send_reception_confirmation(
        case_ref: CaseRef,
        body: ReceptionConfirmationRequest,
        state: State,
        session: Session,
        _: CaseWorker,
    ) -> SentOut:
        """Confirm the person was received, or say why not (the receiving organisation)."""
        type = MessageType.RECEPTION_CONFIRMATION
        request = _outgoing(type, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    @app.post("/cases/{case_ref}/monitoring", **_CASE_ROUTE)
    async def send_monitoring(
        case_ref: CaseRef,
        body: CaseMonitoringRequest,
        state: State,
        session: Session,
        _: CaseWorker,
    ) -> SentOut:
        """Report on a period of monitoring after the return."""
        type = MessageType.CASE_MONITORING
        request = _outgoing(type, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    @app.post("/cases/{case_ref}/closure", **_CASE_ROUTE)
    async def send_closure(
        case_ref: CaseRef, body: CaseClosureRequest, state: State, session: Session, _: CaseWorker
    ) -> SentOut:
        """Close the case transfer."""
        type = MessageType.CASE_CLOSURE
        request = _outgoing(type, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    @app.post("/cases/{case_ref}/consent-withdrawal", **_CASE_ROUTE)
    async def send_consent_withdrawal(
        case_ref: CaseRef,
        body: ConsentWithdrawalRequest,
        state: State,
        session: Session,
        _: CaseWorker,
    ) -> SentOut:
        """Tell the other party the person withdrew consent: all exchange under it ends."""
        type = MessageType.CONSENT_WITHDRAWAL
        request = _outgoing(type, case_ref, body, body.header, body.payload)
        return await send_message(state, session, request)

    return app


def _outgoing(
    type: MessageType, case_ref: str, body: CaseMessage, header: BaseModel, payload: BaseModel
) -> SendRequest:
    """A per-type call's message, as the generic send takes it: the payload as given (unset
    members left out), the header without nulls."""
    return SendRequest(
        type=type,
        case_ref=case_ref,
        recipient=body.recipient,
        sender=body.sender,
        header=header.model_dump(mode="json", exclude_none=True),
        payload=payload.model_dump(mode="json", exclude_unset=True),
        data_categories=body.data_categories,
        consent_ref=body.consent_ref,
        in_reply_to=body.in_reply_to,
    )


async def send_message(state: NodeState, session: AsyncSession, body: SendRequest) -> SentOut:
    """Check the payload against its type's schema, seal it to the recipient, sign the
    envelope, send it, and check the broker's receipt."""
    reasons = check_payload(body.type, json.dumps(body.payload))
    if reasons:
        raise InvalidRequest(
            f"The payload does not fit a {body.type.value} message "
            f"(contracts/schemas/payloads/{body.type.value}.v1.json); fix the listed members.",
            errors=[_body_error(reason) for reason in reasons],
        )
    sender = _sender(state, body.sender)
    now = datetime.now(UTC)
    registry = await state.broker.registry(refresh=True)
    enc = registry.encryption_key(body.recipient, now)
    if enc is None:
        raise InvalidRequest(f"{body.recipient} has no current encryption key in the registry.")
    try:
        envelope, signed = compose_envelope(
            signing_key=state.keys.current[sender].signing,
            sender=sender,
            recipient=body.recipient,
            recipient_enc_kid=enc.kid,
            recipient_enc_public=enc.public,
            recipient_enc_alg=enc.alg,
            type=body.type,
            case_ref=body.case_ref,
            header=body.header,
            payload=body.payload,
            data_categories=body.data_categories,
            consent_ref=body.consent_ref,
            in_reply_to=body.in_reply_to,
            now=now,
        )
    except MalformedError as exc:  # a registry key this node cannot seal to
        raise InvalidRequest(
            f"{body.recipient}'s encryption key cannot be used ({exc}); ask the operator."
        ) from exc
    except ValueError as exc:  # pydantic's ValidationError: the header does not fit the type
        raise InvalidRequest(
            f"The header does not fit a {body.type.value} message; see the envelope contract."
        ) from exc
    try:
        receipt = await state.broker.submit(signed, state.keys.current[sender].signing)
    except BrokerError as exc:
        raise _refused(exc) from exc
    session.add(
        store.SentMessage(
            id=envelope.id,
            type=envelope.type.value,
            case_ref=envelope.case_ref,
            sender=sender,
            recipient=envelope.recipient,
            sent_at=now,
            envelope_digest=receipt.envelope_digest,
            receipt=json.dumps(receipt.jws),
        )
    )
    await session.commit()
    structlog.contextvars.bind_contextvars(message_id=envelope.id)
    log.info("message_sent", type=envelope.type.value)
    return SentOut(
        message_id=receipt.message_id,
        envelope_digest=receipt.envelope_digest,
        accepted_at=receipt.accepted_at,
        receipt=receipt.jws,
    )


def _refused(exc: BrokerError) -> BrokerRefused:
    """The broker's refusal, relayed with what it said to fix (its rule or consent gaps)."""
    extra = {k: exc.problem[k] for k in ("rule", "gaps", "errors") if k in exc.problem}
    return BrokerRefused(
        str(exc), broker_status=exc.status, broker_problem=exc.problem.get("type"), **extra
    )


def _sender(state: NodeState, named: str | None) -> str:
    served = state.keys.participants()
    sender = named or (served[0] if len(served) == 1 else None)
    if sender is None or sender not in served:
        raise InvalidRequest(f"Name the sender: one of {', '.join(served)}.")
    return sender


def _body_error(reason: str) -> dict[str, str]:
    """A payload reason (``payload/x/0: text``) as the API's validation errors put it."""
    location, _, error = reason.partition(": ")
    return {"location": "body/" + location, "error": error}
