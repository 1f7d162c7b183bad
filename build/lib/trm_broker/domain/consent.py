"""Consent scope (docs/design.md §7): does a consent record cover a message?

"No consent, no transfer" (docs/design.md §2, principle 2): every message that carries personal
data must reference a consent whose scope covers its purpose (message type), its recipient
and its data categories, that is valid at the message's acceptance time and not withdrawn.

The broker knows a message only from its clear header and the registry (:class:`MessageFacts`),
so these rules never see, and a refusal never names, personal data: only ids, types,
categories, countries and times.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeAlias

from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.times import rfc3339


class GivenBy(StrEnum):
    """Who gave consent: the person, or a guardian for a child (TRM guidelines, children)."""

    PERSON = "person"
    GUARDIAN = "guardian"


class ScopeGap(StrEnum):
    """One way a consent fails to cover a message; each names a part of the scope."""

    CASE = "case"
    PURPOSE = "purpose"
    RECIPIENT = "recipient"
    DATA_CATEGORIES = "data_categories"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class ConsentRefused(Exception):
    """A message outside its consent's scope. ``gaps`` lists every part missing, ``detail``
    says so in one sentence, naming ids, types, categories, countries and times only."""

    def __init__(self, gaps: tuple[ScopeGap, ...], detail: str) -> None:
        super().__init__(detail)
        self.gaps = gaps
        self.detail = detail


def _require_aware(name: str, moment: datetime | None) -> None:
    # Comparing a naive time with an aware one fails late and obscurely; fail at the boundary.
    if moment is not None and moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True)
class MessageFacts:
    """What the broker knows of a message: its clear header and the registry."""

    type: MessageType
    case_ref: str
    sender: str
    recipient: str
    recipient_country: str
    data_categories: frozenset[DataCategory]
    at: datetime  # acceptance time

    def __post_init__(self) -> None:
        _require_aware("at", self.at)


@dataclass(frozen=True)
class Consent:
    """A consent record as registered by the sending focal point (docs/design.md §7).

    Valid from ``valid_from`` (inclusive) until ``valid_until`` (exclusive; ``None``: open
    ended). Withdrawal takes effect at ``withdrawn_at``: a message accepted at or after it is
    refused.
    """

    id: str
    case_ref: str
    registered_by: str
    given_by: GivenBy
    purposes: frozenset[MessageType]
    recipients: frozenset[str]
    recipient_countries: frozenset[str]
    data_categories: frozenset[DataCategory]
    valid_from: datetime
    valid_until: datetime | None
    withdrawn_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware("valid_from", self.valid_from)
        _require_aware("valid_until", self.valid_until)
        _require_aware("withdrawn_at", self.withdrawn_at)
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be later than valid_from")

    def allows_recipient(self, participant: str, country: str) -> bool:
        """Whether data may go to ``participant`` (in ``country``).

        The focal point that registered the consent is always allowed: it collected the
        signed consent form and already holds the person's data, so replies to it (a
        referral_response, a risk_assessment from the country of return) disclose nothing
        new to a new party.
        """
        return (
            participant == self.registered_by
            or participant in self.recipients
            or country in self.recipient_countries
        )

    def gaps(self, message: MessageFacts) -> tuple[ScopeGap, ...]:
        """Every part of the scope that does not cover ``message``, in :func:`check` order."""
        return tuple(gap for gap, _ in _findings(self, message))

    def covers(self, message: MessageFacts) -> bool:
        """Whether this consent covers ``message`` entirely (:func:`check` without raising)."""
        return not _findings(self, message)


#: CONVENTIONS.md speaks of ``ConsentScope.covers(message)``: a consent record is its scope.
ConsentScope: TypeAlias = Consent


def consent_needed(message_type: MessageType, data_categories: Collection[DataCategory]) -> bool:
    """Whether a message of this type, carrying these data categories, must reference a
    covering consent.

    Every type carries, or may carry, personal data in its sealed payload (docs/design.md §2,
    principle 2), except:

    - ``consent_withdrawal``: it references the consent it withdraws, which is checked on its
      own (it must be possible to withdraw an expired or out-of-scope consent too);
    - a ``case_closure`` that carries no personal data (no data categories: its reason is in
      the clear header), so a case can always be closed, also after the consent was
      withdrawn. One that carries data (notes) needs a covering consent like any message.
      The receiving node checks that the categories are those of the payload.
    """
    if message_type is MessageType.CONSENT_WITHDRAWAL:
        return False
    return not (message_type is MessageType.CASE_CLOSURE and not data_categories)


def _findings(consent: Consent, message: MessageFacts) -> list[tuple[ScopeGap, str]]:
    findings: list[tuple[ScopeGap, str]] = []
    # 1. Validity in time: withdrawal stops all further exchange at once (docs/design.md §7).
    if consent.withdrawn_at is not None and message.at >= consent.withdrawn_at:
        findings.append(
            (
                ScopeGap.WITHDRAWN,
                f"was withdrawn at {rfc3339(consent.withdrawn_at, timespec='auto')}",
            )
        )
    if message.at < consent.valid_from:
        findings.append(
            (
                ScopeGap.NOT_YET_VALID,
                f"is not valid before {rfc3339(consent.valid_from, timespec='auto')}",
            )
        )
    if consent.valid_until is not None and message.at >= consent.valid_until:
        findings.append(
            (ScopeGap.EXPIRED, f"expired at {rfc3339(consent.valid_until, timespec='auto')}")
        )
    # 2. A consent is given for one case: it never lends itself to another person's case.
    if message.case_ref != consent.case_ref:
        findings.append((ScopeGap.CASE, f"does not cover case {message.case_ref}"))
    # 3. Purpose limitation: the purposes are the message types consented to.
    if message.type not in consent.purposes:
        findings.append((ScopeGap.PURPOSE, f"does not cover message type {message.type.value}"))
    # 4. Recipients: named participants, or every participant of a named country.
    if not consent.allows_recipient(message.recipient, message.recipient_country):
        findings.append(
            (
                ScopeGap.RECIPIENT,
                f"does not allow data to go to {message.recipient}"
                f" (or its country {message.recipient_country})",
            )
        )
    # 5. Data minimisation: every category the payload carries must be consented to.
    missing = sorted(
        category.value for category in message.data_categories - consent.data_categories
    )
    if missing:
        findings.append(
            (ScopeGap.DATA_CATEGORIES, f"does not cover data categories {', '.join(missing)}")
        )
    return findings


def check(consent: Consent, message: MessageFacts) -> None:
    """Raise :class:`ConsentRefused` unless ``consent`` covers ``message``.

    All gaps are reported at once, so the sender can fix the consent (or the message) in one
    go. The detail reads, for example: "consent c-1 was withdrawn at 2025-03-01T12:00:00Z;
    does not cover message type return_preparation; does not cover data categories health,
    travel".
    """
    findings = _findings(consent, message)
    if findings:
        detail = f"consent {consent.id} " + "; ".join(text for _, text in findings)
        raise ConsentRefused(tuple(gap for gap, _ in findings), detail)
