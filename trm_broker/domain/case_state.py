"""The state of a case transfer (docs/design.md §6): its stages, the facts the safeguards
read, and one message as the workflow sees it (:class:`Step`). The rules over them are in
``trm_broker.domain.workflow``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, TypeAdapter

from trm_broker.domain.consent import GivenBy
from trm_broker.domain.messages import (
    HEADER_MODELS,
    DataCategory,
    MessageType,
    Readiness,
    RiskLevel,
)
from trm_broker.domain.participants import ParticipantKind


def _aware(name: str, moment: datetime | None) -> datetime | None:
    # Naive times compare wrongly or not at all: refuse them at the boundary, keep UTC.
    if moment is not None and moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return None if moment is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Rules:
    """The safeguards' parameters (settings ``TRM_RISK_MAX_AGE_SECONDS``,
    ``TRM_MIN_NOTICE_SECONDS``, …).

    ``clock_skew`` tolerates a sender's clock a little ahead of the broker's for the times a
    header states (assessed at, received at); use the envelope freshness window.
    """

    risk_max_age: timedelta = timedelta(days=30)
    min_notice: timedelta = timedelta(hours=72)
    reception_grace: timedelta = timedelta(hours=48)
    monitoring_period: timedelta = timedelta(days=365)
    monitoring_interval: timedelta = timedelta(days=91)
    clock_skew: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        zero = timedelta(0)
        # TRM guidelines: monitoring after return lasts one to three years at most.
        if not zero < self.monitoring_period <= timedelta(days=3 * 365):
            raise ValueError("monitoring_period must be more than 0 and at most 3 years")
        if self.risk_max_age <= zero or self.monitoring_interval <= zero:
            raise ValueError("risk_max_age and monitoring_interval must be positive")
        if min(self.min_notice, self.reception_grace, self.clock_skew) < zero:
            raise ValueError("min_notice, reception_grace and clock_skew must not be negative")


@dataclass(frozen=True)
class Party:
    """A registry participant as the workflow needs it."""

    id: str
    kind: ParticipantKind
    country: str


@dataclass(frozen=True)
class Step:
    """One message, from its clear header. ``header`` is the model ``HEADER_MODELS[type]``
    of ``domain.messages``. ``receiving_org`` is, for a return_preparation, the registry
    entry of ``header.receiving_org`` (``None`` if it is not registered). ``case_ref`` is the
    envelope's; a referral needs it, as it starts the case. ``message_id`` is the envelope's
    id, by which :func:`acknowledged` and :func:`rejected` find what the message brought
    (the state keeps those of the referral, its answer, the plan, the plan sent to the
    receiving organisation, the reception confirmation and the monitoring reports not yet
    answered). ``data_categories`` are the envelope's (by default all: a message that
    may carry anything); with the type they say whether the message needs a consent at all."""

    type: MessageType
    sender: Party
    recipient: Party
    header: BaseModel
    consent_given_by: GivenBy | None
    at: datetime
    receiving_org: Party | None = None
    case_ref: str = ""
    message_id: str = ""
    data_categories: frozenset[DataCategory] = frozenset(DataCategory)

    def __post_init__(self) -> None:
        _aware("at", self.at)
        if type(self.header) is not HEADER_MODELS[self.type]:
            raise ValueError(f"a {self.type.value} step needs a {self.type.value} header")
        if self.type is MessageType.REFERRAL and not self.case_ref:
            raise ValueError("a referral step needs the case_ref it starts")
        if self.sender.id == self.recipient.id:
            raise ValueError("sender and recipient must differ")  # as in the envelope (§5)


class Stage(StrEnum):
    REFERRED = "referred"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    RETURN_PREPARED = "return_prepared"
    RECEIVED = "received"
    NOT_RECEIVED = "not_received"  # not arrived, or declined assistance
    CLOSED = "closed"


@dataclass(frozen=True)
class RiskAssessment:
    """The clear facts of a risk assessment of a case, and the message that carried them
    (``""`` in states stored before issue 17, whose assessments counted at acceptance)."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    assessed_at: datetime
    level: RiskLevel
    return_recommended: bool
    message_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "assessed_at", _aware("assessed_at", self.assessed_at))


@dataclass(frozen=True)
class MonitoringReport:
    """A monitoring report accepted and not yet answered by its recipient's node: the
    message that carried it, and when it was accepted."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    message_id: str
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _aware("at", self.at))


_TIMES = (
    "referred_at",
    "planned_arrival",
    "pre_departure_contact_at",
    "received_at",
    "last_monitoring_at",
    "closed_at",
    "monitoring_answered_at",
)


@dataclass(frozen=True)
class CaseTransfer:
    """The state of one case transfer. Times are aware and kept in UTC.

    ``last_risk_assessment`` is the latest (by ``assessed_at``) whose recipient acknowledged
    it; ``pending_risk_assessments`` those accepted since, not yet answered, that would
    displace it. ``referral_message_id`` and ``plan_message_id`` name the messages of the
    referral and of the current return plan; ``referral_rejected`` says the referral's
    recipient rejected it, so its sender may send a corrected one on the same case reference.

    Of the current plan: ``plan_sent_to_org`` is the message id of the return_preparation
    last sent to its receiving organisation (``None``: not sent yet), ``readiness`` the
    organisation's latest answer to it, ``pre_departure_contact_at`` when it last met the
    person before travel. A new plan clears the first two (and the third with a new
    organisation): the organisation is sent, and answers, the plan in force.
    The members after ``closed_at`` came with issue 17; their defaults read older states.
    """

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    case_ref: str
    sending: str
    destination: str
    destination_country: str
    subject_is_minor: bool
    stage: Stage
    referred_at: datetime
    last_risk_assessment: RiskAssessment | None = None
    receiving_org: str | None = None
    planned_arrival: datetime | None = None
    plan_sent_to_org: str | None = None
    readiness: Readiness | None = None
    pre_departure_contact_at: datetime | None = None
    received_at: datetime | None = None
    last_monitoring_at: datetime | None = None
    closed_at: datetime | None = None
    pending_risk_assessments: tuple[RiskAssessment, ...] = ()
    referral_message_id: str = ""
    referral_rejected: bool = False
    plan_message_id: str = ""
    response_message_id: str = ""
    reception_message_id: str = ""
    monitoring_unanswered: tuple[MonitoringReport, ...] = ()
    monitoring_answered_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in _TIMES:
            object.__setattr__(self, name, _aware(name, getattr(self, name)))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready members and ``v`` 1; times RFC 3339 in UTC, to the microsecond."""
        return {"v": 1, **_JSON.dump_python(self, mode="json")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseTransfer:
        """The state :meth:`to_json` gave; ``ValueError`` on anything else."""
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a version 1 case transfer")
        return _JSON.validate_python({name: value for name, value in data.items() if name != "v"})


_JSON = TypeAdapter(CaseTransfer)
