"""The reference NRM node's HTTP app: the broker-facing inbox and the local case-worker API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import structlog
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker import __version__
from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.messages import MessageType
from trm_broker.logs import bind_ids
from trm_broker.node import (
    access_api,
    case_view,
    consent_calls,
    inbox,
    outbox,
    outbox_calls,
    received_api,
    sent_api,
    withdrawals,
)
from trm_broker.node.access import CaseWorker, Reader, check_at_start
from trm_broker.node.auth import broker_push
from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.idempotency import IdempotencyKey
from trm_broker.node.keyring import Keyring, load_keyring
from trm_broker.node.migrate import ready_schema
from trm_broker.node.outbox_calls import Prefer, Sending
from trm_broker.node.outbox_sender import OutboxSender
from trm_broker.node.puller import InboxPuller
from trm_broker.node.schemas import (
    PUSH_BODY,
    AckOut,
    CaseClosureRequest,
    CaseMessage,
    CaseMonitoringRequest,
    ConsentRequest,
    ConsentWithdrawalRequest,
    OutboxList,
    OutboxOut,
    OutboxStateName,
    PreDepartureContactRequest,
    QueuedOut,
    QueuedPlanOut,
    ReceptionConfirmationRequest,
    ReceptionPlanResponseRequest,
    ReferralRequest,
    ReferralResponseRequest,
    ReturnPreparationRequest,
    ReturnPreparationSentOut,
    RiskAssessmentRequest,
    SendRequest,
    SentOut,
)
from trm_broker.node.sending import choose_sender, typed_message
from trm_broker.node.store import OutboxState
from trm_broker.node.tracker import StatusTracker
from trm_broker.node.trust import NodeTrust, load_trust
from trm_broker.node.web.app import UPLOADS as WEB_UPLOADS
from trm_broker.node.web.app import install as web_install
from trm_broker.node.withdrawals import WithdrawalWatch
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine, session_factory
from trm_broker.web import limits, middleware, problems
from trm_broker.web.problems import NotFound
from trm_broker.web.query import MAX_CURSOR, ConsentId

log = structlog.get_logger("trm_broker.node")


@dataclass
class NodeState:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    keys: Keyring
    broker: BrokerClient
    sending: Sending


async def node_state(request: Request) -> NodeState:
    state: NodeState = request.app.state.node
    return state


State = Annotated[NodeState, Depends(node_state)]


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(db_session)]


CaseRef = Annotated[
    str, Path(pattern=CASE_REF_PATTERN, description="The case's pseudonymous reference.")
]
MessageId = Annotated[str, Path(pattern=UUID7_PATTERN, description="The message's id.")]


def _send_route(sent: type[SentOut], queued: type[QueuedOut]) -> dict[str, Any]:
    """A send call's answers: 202 queued, or, with `Prefer: wait`, 201 and the receipt."""
    return {
        "status_code": 202,
        "response_model": None,
        "tags": ["case workers"],
        "responses": {
            201: {
                "model": sent,
                "description": "Sent: the broker's receipt (with `Prefer: wait=<seconds>`, "
                "when it came in time).",
            },
            202: {
                "model": queued,
                "description": "Queued: stored, signed, in the node's outbox; the node sends "
                "it in the background (`GET /outbox/{message_id}`, also in `Location`).",
            },
        },
    }


def create_node_app(settings: Settings, *, broker_http: httpx.AsyncClient | None = None) -> FastAPI:
    """Build the node app; ``broker_http`` replaces the HTTP client used to reach the broker.

    Key files are read when the app starts, so the app (and its OpenAPI) can be built
    without them.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = load_keyring(settings)
        trust = load_trust(settings)
        trust.log_at_start()
        check_at_start(settings, keys)
        engine = create_engine(settings.node_database_url)
        try:
            await ready_schema(settings.node_database_url, engine)
        except BaseException:
            await engine.dispose()
            raise
        broker = BrokerClient(settings.node_broker_url, broker_http, trust=trust)
        sessions = session_factory(engine)
        sender = OutboxSender(
            sessions,
            keys,
            broker,
            backoff_base=settings.node_outbox_retry_base_seconds,
            backoff_cap=settings.node_outbox_retry_max_seconds,
        )
        sending = Sending(settings, sessions, keys, broker, sender)
        app.state.node = NodeState(settings, sessions, keys, broker, sending)
        sender.start()  # what was queued before a restart goes on at once
        app.state.trust = trust
        puller = None
        if settings.node_pull:  # the broker cannot reach this node: fetch instead
            puller = InboxPuller(sessions, keys, broker, wait=settings.node_pull_wait_seconds)
            puller.start()
        watch = WithdrawalWatch(
            sessions,
            keys,
            broker,
            retention=settings.node_withdrawn_retention,
            interval=settings.node_alert_poll_seconds,
        )
        watch.start()
        # The fate of every message sent: read at the broker, woken by each receipt.
        tracker = StatusTracker(
            sessions, keys, broker, interval=settings.node_status_poll_seconds, sender=sender
        )
        tracker.start()
        log.info("node_started", participants=keys.participants(), pull=settings.node_pull)
        try:
            yield
        finally:
            await tracker.stop()
            await watch.stop()
            await sender.stop()
            if puller is not None:
                await puller.stop()
            await broker.aclose()
            await engine.dispose()

    app = FastAPI(title="trm-broker NRM node", version=__version__, lifespan=lifespan)
    problems.install(app)
    limits.install(app, settings, wider=WEB_UPLOADS)  # the web app's consent form uploads
    middleware.install(app)
    access_api.install(app, settings)  # who calls, as which organisation; the audit log
    app.include_router(received_api.router)  # received messages, with their next steps
    web_install(app)  # the web app's pages, under /web (issue 19)

    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> dict[str, str]:
        """Alive; and what the node trusts: `broker_keys` `pinned` or `first-use`,
        `registry_keys` `operator-signed` or `as-served` (docs/node.md)."""
        trust: NodeTrust | None = getattr(request.app.state, "trust", None)
        return {"status": "ok", **(trust.status() if trust is not None else {})}

    @app.post("/inbox", tags=["inbox"], response_model=AckOut, openapi_extra=PUSH_BODY)
    async def receive(
        request: Request, state: State, session: Session
    ) -> dict[str, dict[str, str]]:
        """Called by the broker: verify, open, check the payload and that the clear header is
        what it says, store once, answer a signed acknowledgement (or a signed rejection,
        with its code: `payload-invalid` or `header-payload-mismatch`)."""
        push = await broker_push(request, state.settings, state.broker, session)
        try:
            result = await inbox.receive_once(
                session, push.body, state.keys, state.broker, before_commit=push.spend
            )
        except problems.Problem:
            await push.spend_alone(session)  # a refused push is not replayable either
            raise
        bind_ids(message_id=result.message_id)  # also on this request's `request` line
        if result.rejected:
            log.info("message_rejected", code=result.code)
        else:
            log.info("message_received")
        return {"ack": result.ack}

    @app.post("/messages", **_send_route(SentOut, QueuedOut))
    async def send(
        body: SendRequest,
        request: Request,
        state: State,
        session: Session,
        principal: CaseWorker,
        prefer: Prefer = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Check the payload, compute the clear header and data categories from it, seal it
        to the recipient, sign the envelope and store it in the node's outbox; the node
        sends it in the background until the broker receipts or refuses it.

        The per-type calls below (`/cases/{case_ref}/<type>`) take the same message with
        a typed payload; this one takes any type. A header or data categories given must be
        what the payload says (else 400 `header-payload-mismatch`): leave them out."""
        return await outbox_calls.send(
            state.sending,
            session,
            principal,
            body,
            request,
            route="POST /messages",
            key=idempotency_key,
            prefer=prefer,
        )

    @app.get("/outbox", response_model=OutboxList, tags=["case workers"])
    async def outbox_list(
        state: State,
        session: Session,
        principal: Reader,
        case_ref: Annotated[str | None, Query(pattern=CASE_REF_PATTERN)] = None,
        in_state: Annotated[
            OutboxStateName | None, Query(alias="state", description="Only those in it.")
        ] = None,
        after: Annotated[
            int | None, Query(ge=0, le=MAX_CURSOR, description="The last seq already read.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> OutboxList:
        """What this node sent or is sending, in the order it was queued, with each one's
        state: `queued`, `receipted` or `refused` (and what to fix)."""
        rows = await outbox.listed(
            session,
            principal.participants(state.keys),
            case_ref=case_ref,
            state=OutboxState(in_state) if in_state is not None else None,
            after=after,
            limit=limit,
        )
        return OutboxList(messages=[await outbox.view(session, row) for row in rows])

    @app.get("/outbox/{message_id}", response_model=OutboxOut, tags=["case workers"])
    async def outbox_message(
        message_id: MessageId, state: State, session: Session, principal: Reader
    ) -> OutboxOut:
        """One message this node sent or is sending, and where it stands."""
        row = await outbox.get(session, message_id)
        if row is None or row.sender not in principal.participants(state.keys):
            raise NotFound("No message of that id was sent through this node.")
        return await outbox.view(session, row)

    @app.post("/consents", status_code=201, tags=["case workers"])
    async def register_consent(
        body: ConsentRequest,
        request: Request,
        state: State,
        session: Session,
        principal: CaseWorker,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Register a consent at the broker, signed by the sending focal point (§7). The
        signed form stays here; only its digest travels."""
        return await consent_calls.register(
            state.sending,
            session,
            principal,
            request,
            body,
            route="POST /consents",
            key=idempotency_key,
        )

    @app.post("/consents/{consent_id}/withdraw", tags=["case workers"])
    async def withdraw_consent(
        consent_id: ConsentId,
        request: Request,
        state: State,
        session: Session,
        principal: CaseWorker,
        sender: str | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Withdraw a consent at once (§7); what this node received under it is restricted."""
        keys = principal.keyring(state.keys)
        signer = keys.current[choose_sender(keys, sender)].signing

        async def withdraw() -> dict[str, Any]:
            consent = await state.broker.withdraw_consent(signer, consent_id)
            await _withdrawn_here(session, str(consent.get("case_ref", "")), consent_id)
            return consent

        return await outbox_calls.once(
            state.sending,
            session,
            principal,
            request,
            route="POST /consents/{consent_id}/withdraw",
            key=idempotency_key,
            status=200,
            call=withdraw,
        )

    app.include_router(sent_api.router)  # GET /sent, /sent/{message_id}
    app.include_router(case_view.router)  # GET /cases/{case_ref}: the joined view

    # One call per message type (docs/design.md §6), so nobody hand-builds an envelope.
    for call in CASE_CALLS:
        _add_case_call(app, call)
    problems.document(app)
    return app


async def _withdrawn_here(session: AsyncSession, case_ref: str, consent_ref: str) -> None:
    """A consent withdrawn through this node: restrict at once what it received under it."""
    if case_ref:
        await withdrawals.learned(
            session, case_ref, consent_ref, datetime.now(UTC), withdrawals.FROM_CASE_WORKER
        )
        await session.commit()


@dataclass(frozen=True)
class CaseCall:
    """A per-type call: ``POST /cases/{case_ref}/<path>`` taking ``request``."""

    message_type: MessageType
    path: str
    request: type[CaseMessage]
    doc: str


CASE_CALLS = (
    CaseCall(
        MessageType.REFERRAL,
        "referral",
        ReferralRequest,
        "Refer a case to the country of return's focal point.",
    ),
    CaseCall(
        MessageType.REFERRAL_RESPONSE,
        "referral-response",
        ReferralResponseRequest,
        "Accept or decline a referral (the destination's focal point).",
    ),
    CaseCall(
        MessageType.RISK_ASSESSMENT,
        "risk-assessment",
        RiskAssessmentRequest,
        "Share a risk assessment and its recommendation.",
    ),
    CaseCall(
        MessageType.RETURN_PREPARATION,
        "return-preparation",
        ReturnPreparationRequest,
        "Prepare a return with the designated receiving organisation: the plan goes to the"
        " destination focal point and then, sealed to its own key, to the receiving"
        " organisation the payload names: both are queued, the second sent once the broker"
        " has receipted the first. The answer is the first message's (queued, or its receipt)"
        " and, in `to_receiving_org`, the second's, or why it was refused (the first stands).",
    ),
    CaseCall(
        MessageType.RECEPTION_PLAN_RESPONSE,
        "reception-plan-response",
        ReceptionPlanResponseRequest,
        "Answer the return plan before travel: ready, needs support, or cannot receive with a"
        " reason (the receiving organisation, once it was sent the plan).",
    ),
    CaseCall(
        MessageType.PRE_DEPARTURE_CONTACT,
        "pre-departure-contact",
        PreDepartureContactRequest,
        "Record the receiving organisation's contact with the person before travel"
        " (pre-departure counselling).",
    ),
    CaseCall(
        MessageType.RECEPTION_CONFIRMATION,
        "reception-confirmation",
        ReceptionConfirmationRequest,
        "Confirm the person was received, or say why not (the receiving organisation).",
    ),
    CaseCall(
        MessageType.CASE_MONITORING,
        "monitoring",
        CaseMonitoringRequest,
        "Report on a period of monitoring after the return.",
    ),
    CaseCall(MessageType.CASE_CLOSURE, "closure", CaseClosureRequest, "Close the case transfer."),
    CaseCall(
        MessageType.CONSENT_WITHDRAWAL,
        "consent-withdrawal",
        ConsentWithdrawalRequest,
        "Tell the other party the person withdrew consent: all exchange under it ends.",
    ),
)


def _add_case_call(app: FastAPI, call: CaseCall) -> None:
    plan = call.message_type is MessageType.RETURN_PREPARATION
    path = f"/cases/{{case_ref}}/{call.path}"

    async def endpoint(
        case_ref: CaseRef,
        body: CaseMessage,
        request: Request,
        state: State,
        session: Session,
        principal: CaseWorker,
        prefer: Prefer = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        message = typed_message(call.message_type, case_ref, body)
        # A return plan goes to the destination focal point, then to the receiving org.
        return await outbox_calls.send(
            state.sending,
            session,
            principal,
            message,
            request,
            route="POST " + path,
            key=idempotency_key,
            prefer=prefer,
            plan=plan,
        )

    # FastAPI reads the body's model from the signature: make it this type's request.
    endpoint.__annotations__ = {**endpoint.__annotations__, "body": call.request}
    name = "send_" + call.path.replace("-", "_")  # the operation's id and summary
    route = (
        _send_route(ReturnPreparationSentOut, QueuedPlanOut)
        if plan
        else _send_route(SentOut, QueuedOut)
    )
    app.post(path, name=name, description=call.doc, **route)(endpoint)
