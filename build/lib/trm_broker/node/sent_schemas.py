"""Wire models of the sent messages' fate (`GET /sent`) and of the joined case view
(`GET /cases/{case_ref}`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from trm_broker.domain.messages import MessageType
from trm_broker.node.schemas import ReceivedOut, SentOut

SentStatusName = Literal[
    "queued",
    "refused",
    "accepted",
    "delivered",
    "acknowledged",
    "rejected",
    "dead_lettered",
    "dropped",
]

STATUS_DESCRIPTION = (
    "`queued`: waiting in the node's outbox (the broker not reached yet, or an earlier message "
    "of the case still queued). `refused`: the broker refused it for good (`refused` says the "
    "rule and what to fix). Then the broker's status: `accepted` (receipted, not yet "
    "answered), `delivered` (fetched by the recipient's node from its pull inbox), "
    "`acknowledged` (the recipient's node answered with its signed acknowledgement), "
    "`rejected` (it refused the payload: `rejection` gives its reasons when the broker does), "
    "`dead_lettered` (no answer within the broker's maximum age; an operator may re-queue "
    "it) or `dropped` (the consent was withdrawn before delivery)."
)


class StatusChangeOut(BaseModel):
    status: SentStatusName
    at: datetime | None = Field(
        description="When it happened, by the node's outbox (`queued`, `refused`) or the "
        "broker (the receipt's acceptance, the fetch, the answer, the dead letter); null when "
        "the broker gives no time (`dropped`, a re-queue)."
    )
    seen_at: datetime = Field(description="When this node learned it.")


class SentMessageOut(BaseModel):
    """A message this node sent, and what became of it."""

    seq: int | None = Field(
        description="Its place in the node's outbox: page with ?after=<seq>. Null for a "
        "message sent before the node had an outbox."
    )
    message_id: str
    type: MessageType
    case_ref: str
    sender: str
    recipient: str
    status: SentStatusName = Field(description=STATUS_DESCRIPTION)
    final: bool = Field(
        description="Nothing more will happen to it: refused, acknowledged, rejected, "
        "dead-lettered (unless an operator re-queues it) or dropped."
    )
    queued_at: datetime | None = None
    accepted_at: datetime | None = Field(None, description="The receipt's acceptance time.")
    delivered_at: datetime | None = Field(
        None, description="When the recipient's node fetched it from its pull inbox."
    )
    answered_at: datetime | None = Field(
        None, description="When its acknowledgement or rejection was recorded at the broker."
    )
    dead_lettered_at: datetime | None = None
    payload_purged_at: datetime | None = Field(
        None, description="When the sealed payload left the broker (retention, withdrawal)."
    )
    receipt: SentOut | None = Field(None, description="The broker's receipt, once receipted.")
    rejection: dict[str, Any] | None = Field(
        None,
        description="A rejected message: the recipient's `code` and `reasons` (locations in "
        "the payload, never content), when the broker gives them.",
    )
    refused: dict[str, Any] | None = Field(
        None,
        description="A refused message: the refusal (problem+json) with the broker's rule, "
        "gaps and what to fix.",
    )
    attempts: int | None = Field(
        None, description="While queued: submissions to the broker so far."
    )
    next_attempt_at: datetime | None = Field(None, description="While queued: the next try.")
    last_error: str | None = Field(
        None, description="While queued: why the last submission failed, as a code."
    )
    delivery_attempts: int | None = Field(
        None, description="The broker's pushes of it so far (and answers through the inbox)."
    )
    delivery_error: str | None = Field(
        None, description="Why the broker's last push failed, as a code (`http_503`)."
    )
    checked_at: datetime | None = Field(
        None, description="When this node last read its status at the broker."
    )
    next_check_at: datetime | None = Field(
        None, description="When it reads it next; null once nothing more can change."
    )
    check_error: str | None = Field(
        None, description="Why the last read failed, as a code (`broker_unreachable`)."
    )
    changes: list[StatusChangeOut] = Field(
        description="Each status it took, oldest first, with when."
    )


class SentMessageList(BaseModel):
    messages: list[SentMessageOut]


class ConsentState(BaseModel):
    id: str
    given_by: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    withdrawn_at: datetime | None = None
    state: Literal["active", "not_yet_valid", "expired", "withdrawn", "unknown"] = Field(
        description="`active`: messages may be sent under it now; `not_yet_valid`; "
        "`expired`; `withdrawn` (at the broker, or as this node learned it); `unknown`: "
        "cited by a message here, but the broker could not be asked."
    )


class TimelineEntry(BaseModel):
    """One message of the case: sent by the reader (``sent``) or received (``received``)."""

    direction: Literal["sent", "received"]
    message_id: str
    type: MessageType
    sender: str
    recipient: str
    at: datetime = Field(
        description="The order of the timeline: when it was queued here (sent), or made by "
        "its sender (received)."
    )
    status: str = Field(
        description="A sent message's status (see `GET /sent`); a received one's is "
        "`received`, or `restricted` once the consent it came under was withdrawn."
    )
    consent_ref: str | None = None
    sent: SentMessageOut | None = None
    received: ReceivedOut | None = None


class CaseViewOut(BaseModel):
    """A case as one of the node's organisations sees it: its messages sent and received
    here, its consents, open alerts, deadlines and next steps, and the broker's view."""

    case_ref: str
    reader: str = Field(description="The organisation whose view this is.")
    stage: str | None = Field(description="The workflow's stage at the broker.")
    timeline: list[TimelineEntry]
    consents: list[ConsentState]
    alerts: list[dict[str, Any]] = Field(
        description="The case's open alerts at the broker that name the reader (`GET "
        "/v1/alerts`): reception or monitoring overdue, a dead letter, a consent withdrawn."
    )
    deadlines: Any = Field(
        None,
        description="The case's deadlines as the broker states them (reception due, "
        "monitoring due); null when the broker gives none.",
    )
    next_steps: Any = Field(
        None,
        description="The steps the workflow allows next, as the broker states them; null "
        "when the broker gives none.",
    )
    broker: dict[str, Any] | None = Field(
        description="The broker's view of the case (`GET /v1/cases/{case_ref}`: its state, "
        "timeline of every party's messages, consents, alerts): metadata only. Null when the "
        "broker could not be asked (`broker_problem`)."
    )
    broker_problem: dict[str, Any] | None = Field(
        None,
        description="Why the broker's part is missing (problem+json): unreachable, or the "
        "case is not known there yet (a first message still queued).",
    )
