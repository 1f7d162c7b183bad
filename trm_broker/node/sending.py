"""Sending from the node: check the payload, seal it to the recipient, sign the envelope,
submit it to the broker, check the receipt, and keep a record of what was sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto.errors import MalformedError
from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import check_payload
from trm_broker.node import store
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.compose import compose_envelope
from trm_broker.node.keyring import Keyring
from trm_broker.node.schemas import CaseMessage, SendRequest, SentOut
from trm_broker.web.problems import InvalidRequest, Problem

log = structlog.get_logger("trm_broker.node")


class BrokerRefused(Problem):
    status, slug, title = 502, "broker-refused", "The broker refused the message"


class BrokerFailed(Problem):
    status, slug, title = 502, "broker-failed", "The broker did not answer as it should"


class BrokerUnavailable(Problem):
    status, slug, title = 503, "broker-unavailable", "The broker is unreachable; retry later"


#: What the broker refuses because of the request itself is the case worker's to fix, and
#: answered with the broker's own status. 401 is not: the node's own key was refused, a
#: fault of this node's set-up (502), like a broker answering wrongly.
_RELAYED = frozenset({400, 403, 404, 409, 413, 415, 422, 429})


def refused(exc: BrokerError) -> Problem:
    """The broker's refusal, relayed with what it said to fix (its rule or consent gaps)."""
    extra: dict[str, Any] = {
        k: exc.problem[k] for k in ("rule", "gaps", "errors") if k in exc.problem
    }
    details: dict[str, Any] = {
        "broker_status": exc.status,
        "broker_problem": exc.problem.get("type"),
        **extra,
    }
    if exc.status in (503, 504):
        return BrokerUnavailable(str(exc), **details)
    if exc.status not in _RELAYED:
        return BrokerFailed(str(exc), **details)
    problem = BrokerRefused(str(exc), **details)
    problem.status = exc.status
    if exc.status == 429 and "retry_after" in exc.problem:
        problem.headers = {"retry-after": str(exc.problem["retry_after"])}
    return problem


def choose_sender(keys: Keyring, named: str | None) -> str:
    """The participant a call acts for: the one named, or the only one the node serves."""
    served = keys.participants()
    sender = named or (served[0] if len(served) == 1 else None)
    if sender is None or sender not in served:
        raise InvalidRequest(f"Name the sender: one of {', '.join(served)}.")
    return sender


def typed_message(type: MessageType, case_ref: str, body: CaseMessage) -> SendRequest:
    """A per-type call's message, as the generic send takes it: the payload as given (unset
    members left out), the header without nulls."""
    header = body.model_dump(mode="json", include={"header"}, exclude_none=True)
    payload = body.model_dump(mode="json", include={"payload"}, exclude_unset=True)
    return SendRequest(
        type=type,
        case_ref=case_ref,
        recipient=body.recipient,
        sender=body.sender,
        header=header["header"],
        payload=payload.get("payload", {}),
        data_categories=body.data_categories,
        consent_ref=body.consent_ref,
        in_reply_to=body.in_reply_to,
    )


async def send_message(
    keys: Keyring, broker: BrokerClient, session: AsyncSession, body: SendRequest
) -> SentOut:
    """Check the payload against its type's schema, seal it to the recipient, sign the
    envelope, send it, and check the broker's receipt."""
    reasons = check_payload(body.type, json.dumps(body.payload))
    if reasons:
        raise InvalidRequest(
            f"The payload does not fit a {body.type.value} message "
            f"(contracts/schemas/payloads/{body.type.value}.v1.json); fix the listed members.",
            errors=[_body_error(reason) for reason in reasons],
        )
    sender = choose_sender(keys, body.sender)
    now = datetime.now(UTC)
    registry = await broker.registry(refresh=True)
    enc = registry.encryption_key(body.recipient, now)
    if enc is None:
        raise InvalidRequest(f"{body.recipient} has no current encryption key in the registry.")
    try:
        envelope, signed = compose_envelope(
            signing_key=keys.current[sender].signing,
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
        receipt = await broker.submit(signed, keys.current[sender].signing)
    except BrokerError as exc:
        raise refused(exc) from exc
    session.add(
        store.sent_row(
            envelope,
            digest=receipt.envelope_digest,
            receipt=json.dumps(receipt.jws),
            now=now,
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


def _body_error(reason: str) -> dict[str, str]:
    """A payload reason (``payload/x/0: text``) as the API's validation errors put it."""
    location, _, error = reason.partition(": ")
    return {"location": "body/" + location, "error": error}
