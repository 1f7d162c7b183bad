"""The node's routes of access: the audit log (``GET /audit``) and the password login
(``POST /login``), and :func:`install`, which puts the access check's parts on the app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import structlog
from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.node import sign_in_throttle, users
from trm_broker.node.access import Supervisor
from trm_broker.node.audit import AuditTrail, Caller, entries, note_caller
from trm_broker.node.oidc import OidcVerifier
from trm_broker.node.users import USER_NAME_PATTERN
from trm_broker.settings import Settings
from trm_broker.web.problems import RateLimited, Unauthenticated
from trm_broker.web.query import MAX_CURSOR

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

log = structlog.get_logger("trm_broker.node.access")
router = APIRouter()


class AuditOut(BaseModel):
    seq: int = Field(description="The cursor: pass the last one read as `after`.")
    at: datetime
    user: str = Field(
        description="`admin` for the administrator's token, `oidc:<subject>` for a single sign-on."
    )
    organisation: str | None = Field(description="null for the administrator's token.")
    role: str
    action: str = Field(description="The route: method and path template.")
    case_ref: str | None
    message_id: str | None
    outcome: str = Field(description="`ok`, `refused` or `failed`.")
    status: int = Field(description="The HTTP status the caller was answered.")
    request_id: str | None = Field(description="The request's id, as in the node's logs.")


class AuditList(BaseModel):
    entries: list[AuditOut]


@router.get("/audit", response_model=AuditList, tags=["supervisors"])
async def audit_log(
    request: Request,
    principal: Supervisor,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_CURSOR, description="The last seq already read.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    case_ref: Annotated[
        str | None, Query(pattern=CASE_REF_PATTERN, description="Only this case's actions.")
    ] = None,
) -> AuditList:
    """What the users of the supervisor's organisation did, allowed or refused, in order:
    who, which action, which case and message, when, and how it ended. Never content."""
    state: NodeState = request.app.state.node
    async with state.sessions() as session:
        rows = await entries(
            session,
            organisation=principal.organisation,
            after=after,
            limit=limit,
            case_ref=case_ref,
        )
    return AuditList(
        entries=[
            AuditOut(
                seq=r.seq,
                at=r.at,
                user=r.user_name,
                organisation=r.organisation,
                role=r.role,
                action=r.action,
                case_ref=r.case_ref,
                message_id=r.message_id,
                outcome=r.outcome,
                status=r.status,
                request_id=r.request_id,
            )
            for r in rows
        ]
    )


class LoginRequest(BaseModel):
    user: str = Field(pattern=USER_NAME_PATTERN, description="Your user name.")
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    token: str = Field(
        description="Your API token: send it as `Authorization: Bearer`. Shown once."
    )
    token_id: str
    expires_at: datetime
    user: str
    organisation: str
    role: users.Role


@router.post("/login", response_model=LoginOut, status_code=201, tags=["users"])
async def login(body: LoginRequest, request: Request) -> LoginOut:
    """A user with a password (`trm-broker node users password set`) gets an API token that
    expires after TRM_NODE_LOGIN_TOKEN_SECONDS."""
    state: NodeState = request.app.state.node
    now = datetime.now(UTC)
    address = request.client.host if request.client else "unknown"
    limiter = sign_in_throttle.of(request.app.state)
    async with state.sessions() as session:
        account = await users.user(session, body.user)
        if account is not None:
            # Audited either way: a run of refused logins for one user is a finding.
            note_caller(
                request.scope, Caller(account.name, account.organisation, account.role.value)
            )
        wait = limiter.wait(body.user, address, now)
        if wait is not None:
            raise RateLimited(
                "Too many failed logins for this user or from this address: wait, then try"
                " again; if you forgot the password, ask your node's administrator.",
                retry_after=wait.total_seconds(),
            )
        matches = users.password_matches(account, body.password)
        if account is None or not matches or account.disabled_at is not None:
            limiter.failed(body.user, address, now)
            raise Unauthenticated(
                "Unknown user or wrong password: check both, or ask your node's administrator."
            )
        limiter.succeeded(body.user)
        expires_at = now + timedelta(seconds=state.settings.node_login_token_seconds)
        issued = await users.new_token(
            session, account.name, now, label="login", expires_at=expires_at
        )
        await session.commit()
        return LoginOut(
            token=issued.token,
            token_id=issued.id,
            expires_at=expires_at,
            user=account.name,
            organisation=account.organisation,
            role=account.role,
        )


def install(app: FastAPI, settings: Settings) -> None:
    """The audit trail around every route, the sign-on verifier, and the routes above."""
    signs_on = settings.node_oidc_issuer is not None and settings.node_oidc_audience is not None
    app.state.oidc = OidcVerifier(settings) if signs_on else None
    app.include_router(router)
    app.add_middleware(AuditTrail)
