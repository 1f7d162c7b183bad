"""Who calls the node's local API, for which organisation, in which role: the one check every
case-worker route depends on.

Organisations are the participants the node serves (its key files). A caller is one of:

- a **user** of one organisation, with an API token (`trm-broker node users add`) or a token
  a password login made (``POST /login``);
- a person signed on with the ministry's **identity provider** (OpenID Connect, if
  configured), whose token names the organisation and the role;
- the **administrator's token** (``TRM_NODE_API_TOKEN``), a machine token that acts for
  every organisation the node serves.

The check yields a :class:`Principal`. Routes take it as one of three ``Annotated`` types,
:data:`Reader`, :data:`CaseWorker` or :data:`Supervisor`, and scope what they do with it: a
user's reads are filtered to their organisation in the query itself
(:meth:`Principal.participants`), and their sends sign with their organisation's keys alone
(:meth:`Principal.keyring`), so naming another organisation as the sender is refused (403)
and no key of another is within reach. Every call of a known caller, allowed or refused, is
written to the node's audit log (:mod:`trm_broker.node.audit`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import structlog
from fastapi import Depends, Header, Request

from trm_broker.node import users
from trm_broker.node.audit import Caller, note_caller
from trm_broker.node.keyring import Keyring
from trm_broker.node.oidc import OidcVerifier
from trm_broker.node.users import ADMINISTRATOR, TOKEN_PREFIX, Role
from trm_broker.settings import Settings
from trm_broker.web.problems import Forbidden, NotConfigured, Problem, Unauthenticated

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

log = structlog.get_logger("trm_broker.node.access")

#: The role the audit log shows for the administrator's token.
ADMINISTRATOR_ROLE = "administrator"
#: The user name of a person signed on with the identity provider: ``oidc:<subject>``.
SIGN_ON_PREFIX = "oidc:"


@dataclass(frozen=True)
class Principal:
    """The caller: a user of one organisation in one role, or the administrator
    (``organisation`` and ``role`` ``None``: every organisation, every action)."""

    user: str
    organisation: str | None
    role: Role | None

    @property
    def administrator(self) -> bool:
        return self.organisation is None

    @property
    def role_name(self) -> str:
        return self.role.value if self.role is not None else ADMINISTRATOR_ROLE

    def may_send(self) -> bool:
        return self.administrator or self.role is Role.CASE_WORKER

    def may_read_audit(self) -> bool:
        return self.administrator or self.role is Role.SUPERVISOR

    def participants(self, keys: Keyring) -> list[str]:
        """The participants whose messages, cases and consents the caller reads: their
        organisation, or every one the node serves (the administrator)."""
        if self.organisation is None:
            return keys.participants()
        return [self.organisation] if self.organisation in keys.current else []

    def keyring(self, keys: Keyring) -> Keyring:
        """The keys the caller acts with: their organisation's alone."""
        return keys if self.organisation is None else keys.only(self.organisation)


def _credential(authorization: str | None) -> str | None:
    scheme, _, credential = (authorization or "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


async def authenticated(
    request: Request,
    authorization: Annotated[
        str | None,
        Header(
            description="`Bearer <token>`: a user's API token, a single sign-on token, or "
            "the administrator's token (TRM_NODE_API_TOKEN)."
        ),
    ] = None,
) -> Principal:
    """The caller, or 401 (no valid credential) or 403 (a valid one for an organisation
    or role this node does not serve)."""
    state: NodeState = request.app.state.node
    credential = _credential(authorization)
    principal: Principal | None = None
    if credential is not None:
        principal = await _identify(request, state, credential)
    if principal is None:
        raise await _refusal(state)
    note_caller(request.scope, Caller(principal.user, principal.organisation, principal.role_name))
    if principal.organisation is not None and principal.organisation not in state.keys.current:
        raise Forbidden(
            f"This node does not serve {principal.organisation}: ask its administrator which "
            "organisations it serves."
        )
    return principal


async def _identify(request: Request, state: NodeState, credential: str) -> Principal | None:
    admin = state.settings.node_api_token
    if admin is not None and hmac.compare_digest(
        credential.encode(), admin.get_secret_value().encode()
    ):
        return Principal(ADMINISTRATOR, None, None)
    if credential.startswith(TOKEN_PREFIX):
        return await _user_token(request, state, credential)
    verifier: OidcVerifier | None = getattr(request.app.state, "oidc", None)
    if verifier is not None and credential.count(".") == 2:
        return await _signed_on(request, verifier, credential)
    return None


async def _user_token(request: Request, state: NodeState, credential: str) -> Principal | None:
    async with state.sessions() as session:
        found = await users.holder(session, credential)
    if found is None:
        return None
    account = found.user
    if not found.usable(datetime.now(UTC)):
        # Audited as the user's refused attempt: a revoked token still in use is a finding.
        note_caller(request.scope, Caller(account.name, account.organisation, account.role.value))
        raise Unauthenticated(
            "This token was revoked, has expired, or its user is disabled: ask your node's "
            "administrator for a new one."
        )
    return Principal(account.name, account.organisation, account.role)


async def _signed_on(request: Request, verifier: OidcVerifier, credential: str) -> Principal:
    identity = await verifier.verify(credential)
    user = (SIGN_ON_PREFIX + identity.subject)[:255]
    known = [Role(r) for r in identity.roles if r in Role.__members__.values()]
    if len(known) != 1:
        note_caller(request.scope, Caller(user, identity.organisation, "unknown"))
        raise Forbidden(
            f"The sign-on token must give exactly one role of this node "
            f"({', '.join(Role)}): ask the identity provider's administrator."
        )
    return Principal(user, identity.organisation, known[0])


async def _refusal(state: NodeState) -> Problem:
    """401; or 503 on a node where nobody could sign in yet."""
    settings = state.settings
    if settings.node_api_token is None and settings.node_oidc_issuer is None:
        async with state.sessions() as session:
            anyone = await users.any_user(session)
        if not anyone:
            return NotConfigured(
                "The local API has no users yet: create one with `trm-broker node users add`, "
                "or set TRM_NODE_API_TOKEN on the node."
            )
    return Unauthenticated(
        "Send your API token as `Authorization: Bearer <token>` (a user's token from "
        "`trm-broker node users add`, or a single sign-on token)."
    )


async def case_worker(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.may_send():
        raise Forbidden(
            f"A {principal.role_name} reads but does not send: ask a case worker of your "
            "organisation."
        )
    return principal


async def supervisor(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.may_read_audit():
        raise Forbidden("Only a supervisor of your organisation reads the audit log.")
    return principal


#: Any user of an organisation the node serves: reads their organisation's data.
Reader = Annotated[Principal, Depends(authenticated)]
#: A case worker (or the administrator): reads, and sends as their organisation.
CaseWorker = Annotated[Principal, Depends(case_worker)]
#: A supervisor (or the administrator): reads, and reads the audit log.
Supervisor = Annotated[Principal, Depends(supervisor)]


def check_at_start(settings: Settings, keys: Keyring) -> None:
    """Refuse a half-configured sign-on; warn when the administrator's token crosses
    organisations."""
    if (settings.node_oidc_issuer is None) != (settings.node_oidc_audience is None):
        raise SystemExit(
            "Set both TRM_NODE_OIDC_ISSUER and TRM_NODE_OIDC_AUDIENCE for single sign-on, "
            "or neither."
        )
    served = keys.participants()
    if settings.node_api_token is not None and len(served) > 1:
        log.warning(
            "admin_token_crosses_organisations",
            organisations=served,
            advice="TRM_NODE_API_TOKEN reads and sends as every organisation this node "
            "serves: give people their own tokens (`trm-broker node users add`) and keep it "
            "for administration.",
        )
