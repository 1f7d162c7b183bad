"""Composing at the node: check the payload, compute the clear header and data categories
from it, seal it to the recipient and sign the envelope, which then waits in the node's
outbox (node/outbox.py) until the background sender has a receipt or a final refusal for
it; and how a broker's refusal is answered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from trm_broker.crypto.errors import MalformedError
from trm_broker.domain.consent import consent_needed
from trm_broker.domain.envelope import Envelope
from trm_broker.domain.messages import HEADER_MODELS, MessageType
from trm_broker.domain.payloads import check_payload, read_payload
from trm_broker.domain.projections import Projection, project
from trm_broker.domain.schema_errors import error_location
from trm_broker.node.broker_client import BrokerClient, BrokerError, Registry
from trm_broker.node.case_steps import CaseViewUnreadable, choose_consent
from trm_broker.node.compose import compose_envelope
from trm_broker.node.keyring import Keyring
from trm_broker.node.schemas import CaseMessage, SendRequest
from trm_broker.node.trust import sealing_key
from trm_broker.web.problems import Forbidden, InvalidRequest, Problem

log = structlog.get_logger("trm_broker.node")


class BrokerRefused(Problem):
    status, slug, title = 502, "broker-refused", "The broker refused the message"


class BrokerFailed(Problem):
    status, slug, title = 502, "broker-failed", "The broker did not answer as it should"


class BrokerUnavailable(Problem):
    status, slug, title = 503, "broker-unavailable", "The broker is unreachable; retry later"


class HeaderPayloadMismatch(Problem):
    """A header or data categories given with the payload that say other than it does."""

    status, slug, title = 400, "header-payload-mismatch", "The header does not match the payload"


#: What the broker refuses because of the request itself is the case worker's to fix, and
#: answered with the broker's own status. 401 is not: the node's own key was refused, a
#: fault of this node's set-up (502), like a broker answering wrongly.
_RELAYED = frozenset({400, 403, 404, 409, 413, 415, 422, 429})


def refused(exc: BrokerError) -> Problem:
    """The broker's refusal, relayed with what it said to fix (its rule or consent gaps)."""
    extra: dict[str, Any] = {
        k: exc.problem[k] for k in ("rule", "window_seconds", "gaps", "errors") if k in exc.problem
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
    """The participant a call acts for: the one named, or the only one the node serves
    (to the caller: a user's keyring holds their organisation's keys alone)."""
    served = keys.participants()
    if named is not None and named in keys.withheld:
        raise Forbidden(f"You act for {', '.join(served)} only: leave the sender out.")
    sender = named or (served[0] if len(served) == 1 else None)
    if sender is None or sender not in served:
        raise InvalidRequest(f"Name the sender: one of {', '.join(served)}.")
    return sender


def typed_message(type: MessageType, case_ref: str, body: CaseMessage) -> SendRequest:
    """A per-type call's message, as the generic send takes it: the payload as given (unset
    members left out), the header, if one was given, without nulls."""
    header = body.model_dump(mode="json", include={"header"}, exclude_none=True)
    payload = body.model_dump(mode="json", include={"payload"}, exclude_unset=True)
    return SendRequest(
        type=type,
        case_ref=case_ref,
        recipient=body.recipient,
        sender=body.sender,
        header=header.get("header"),
        payload=payload.get("payload", {}),
        data_categories=body.data_categories,
        consent_ref=body.consent_ref,
        in_reply_to=body.in_reply_to,
    )


@dataclass(frozen=True)
class Composed:
    """A message ready to queue: its envelope and the signed JWS of it."""

    envelope: Envelope
    signed: dict[str, str]


async def current_registry(broker: BrokerClient) -> Registry:
    """The registry as the broker has it now; while the broker cannot be reached, the one
    read last (the node seals to the keys it knew, and the broker checks them on
    acceptance). A node that has read none since it started cannot seal: 503."""
    try:
        return await broker.registry(refresh=True)
    except BrokerError as exc:
        known = broker.last_registry()
        if exc.status in (502, 503, 504) and known is not None:
            log.warning("registry_from_memory", broker_status=exc.status)
            return known
        raise refused(exc) from exc


async def compose_message(keys: Keyring, broker: BrokerClient, body: SendRequest) -> Composed:
    """Check the payload against its type's schema, compute the header and data categories
    from it, seal it to the recipient and sign the envelope; nothing is sent here."""
    text = json.dumps(body.payload)
    reasons = check_payload(body.type, text)
    if reasons:
        raise InvalidRequest(
            f"The payload does not fit a {body.type.value} message "
            f"(contracts/schemas/payloads/{body.type.value}.v1.json); fix the listed members.",
            errors=[_body_error(reason) for reason in reasons],
        )
    sender = choose_sender(keys, body.sender)
    # The envelope's created_at: a child's case is one by the age on the day it is made.
    now = datetime.now(UTC)
    projection = project(body.type, read_payload(body.type, text), now)
    _check_stated(body, projection)
    registry = await current_registry(broker)
    enc = sealing_key(registry, body.recipient, now)  # a key the node believes (trust.py)
    consent_ref = body.consent_ref
    if consent_ref is None and consent_needed(body.type, projection.data_categories):
        consent_ref = await _chosen_consent(keys, broker, registry, body, sender, projection, now)
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
            header=projection.header_json(),
            payload=body.payload,
            data_categories=sorted(projection.data_categories),
            consent_ref=consent_ref,
            in_reply_to=body.in_reply_to,
            now=now,
        )
    except MalformedError as exc:  # a registry key this node cannot seal to
        raise InvalidRequest(
            f"{body.recipient}'s encryption key cannot be used ({exc}); ask the operator."
        ) from exc
    except ValueError as exc:  # pydantic's ValidationError: e.g. a consent_ref out of pattern
        raise InvalidRequest(
            "The message does not fit the envelope contract (contracts/schemas/envelope.v1.json):"
            " check consent_ref, and that sender and recipient differ."
        ) from exc
    return Composed(envelope, signed)


async def _chosen_consent(
    keys: Keyring,
    broker: BrokerClient,
    registry: Registry,
    body: SendRequest,
    sender: str,
    projection: Projection,
    now: datetime,
) -> str:
    """The consent a message that names none is sent under: the one consent of its case
    that covers it (case_steps.py), else 400 ``consent-not-chosen`` with the candidates."""
    recipient = registry.participants.get(body.recipient) or {}
    try:
        return await choose_consent(
            broker,
            keys.current[sender].signing,
            message_type=body.type,
            case_ref=body.case_ref,
            sender=sender,
            recipient=body.recipient,
            recipient_country=str(recipient.get("country", "")),
            data_categories=projection.data_categories,
            now=now,
        )
    except CaseViewUnreadable as exc:
        raise refused(BrokerError(exc.status, exc.problem)) from exc


def _check_stated(body: SendRequest, projection: Projection) -> None:
    """A header or data categories the case worker gave must be the payload's projection:
    one that says otherwise would be rejected by the recipient's node as a lie, so it is
    refused here, naming the fields (never their values)."""
    errors: list[dict[str, str]] = []
    if body.header is not None:
        header = _stated_header(body.type, body.header)
        errors += [
            {"location": f"body/header/{name}", "error": "does not match the payload"}
            for name in type(header).model_fields
            if getattr(header, name) != getattr(projection.header, name)
        ]
    if body.data_categories is not None and set(body.data_categories) != set(
        projection.data_categories
    ):
        errors.append({"location": "body/data_categories", "error": "does not match the payload"})
    if errors:
        raise HeaderPayloadMismatch(
            "The header and data categories are computed from the payload: leave them out, "
            "or fix the payload so that it says what they say.",
            errors=errors,
        )


def _stated_header(message_type: MessageType, header: dict[str, Any]) -> BaseModel:
    try:
        return HEADER_MODELS[message_type].model_validate(header)
    except ValidationError as exc:
        raise InvalidRequest(
            f"The header does not fit a {message_type.value} message "
            f"(contracts/schemas/headers/{message_type.value}.v1.json); better, leave it out: "
            "the node computes it from the payload.",
            errors=[
                {"location": f"body/header/{error_location(e)}", "error": e["msg"]}
                for e in exc.errors(include_input=False)
            ],
        ) from exc


def _body_error(reason: str) -> dict[str, str]:
    """A payload reason (``payload/x/0: text``) as the API's validation errors put it."""
    location, _, error = reason.partition(": ")
    return {"location": "body/" + location, "error": error}
