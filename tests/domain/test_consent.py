"""Consent scope (docs/design.md §7): a consent covers a message only if its case, purpose,
recipient, data categories and validity all do; a refusal lists every gap, in words."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trm_broker.domain.consent import (
    Consent,
    ConsentRefused,
    ConsentScope,
    GivenBy,
    MessageFacts,
    ScopeGap,
    check,
    consent_needed,
)
from trm_broker.domain.messages import DataCategory, MessageType

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
TICK = timedelta(microseconds=1)
CASE = "NG-2025-0001"
CLOSURE = MessageType.CASE_CLOSURE

CONSENT = Consent(
    id="c-1",
    case_ref=CASE,
    registered_by="ng.naptip",
    given_by=GivenBy.PERSON,
    purposes=frozenset({MessageType.REFERRAL, MessageType.RISK_ASSESSMENT}),
    recipients=frozenset({"gb.nrm"}),
    recipient_countries=frozenset(),
    data_categories=frozenset({DataCategory.IDENTITY, DataCategory.HEALTH}),
    valid_from=T0,
    valid_until=T0 + timedelta(days=365),
)

MESSAGE = MessageFacts(
    type=MessageType.REFERRAL,
    case_ref=CASE,
    sender="ng.naptip",
    recipient="gb.nrm",
    recipient_country="GB",
    data_categories=frozenset({DataCategory.IDENTITY}),
    at=T0 + timedelta(days=1),
)


def refusal(consent: Consent, message: MessageFacts) -> ConsentRefused:
    with pytest.raises(ConsentRefused) as raised:
        check(consent, message)
    assert not consent.covers(message)
    assert consent.gaps(message) == raised.value.gaps
    assert str(raised.value) == raised.value.detail
    return raised.value


def test_a_message_inside_the_scope_is_covered() -> None:
    check(CONSENT, MESSAGE)
    assert CONSENT.covers(MESSAGE)
    assert CONSENT.gaps(MESSAGE) == ()


def test_consent_scope_is_the_consent_record() -> None:
    # CONVENTIONS.md names ConsentScope.covers(message).
    assert ConsentScope is Consent
    assert ConsentScope.covers(CONSENT, MESSAGE)


@pytest.mark.parametrize(
    ("consent_changes", "message_changes", "gap", "detail"),
    [
        pytest.param(
            {},
            {"case_ref": "NG-2025-0002"},
            ScopeGap.CASE,
            "consent c-1 does not cover case NG-2025-0002",
            id="case",
        ),
        pytest.param(
            {},
            {"type": MessageType.RETURN_PREPARATION},
            ScopeGap.PURPOSE,
            "consent c-1 does not cover message type return_preparation",
            id="purpose",
        ),
        pytest.param(
            {},
            {"recipient": "ng.shelter", "recipient_country": "NG"},
            ScopeGap.RECIPIENT,
            "consent c-1 does not allow data to go to ng.shelter (or its country NG)",
            id="recipient",
        ),
        pytest.param(
            {},
            {
                "data_categories": frozenset(
                    {DataCategory.TRAVEL, DataCategory.IDENTITY, DataCategory.FAMILY}
                )
            },
            ScopeGap.DATA_CATEGORIES,
            "consent c-1 does not cover data categories family, travel",
            id="data_categories",
        ),
        pytest.param(
            {},
            {"at": T0 - TICK},
            ScopeGap.NOT_YET_VALID,
            "consent c-1 is not valid before 2025-03-01T12:00:00Z",
            id="not_yet_valid",
        ),
        pytest.param(
            {},
            {"at": T0 + timedelta(days=365)},
            ScopeGap.EXPIRED,
            "consent c-1 expired at 2026-03-01T12:00:00Z",
            id="expired",
        ),
        pytest.param(
            {"withdrawn_at": T0 + timedelta(hours=5)},
            {},
            ScopeGap.WITHDRAWN,
            "consent c-1 was withdrawn at 2025-03-01T17:00:00Z",
            id="withdrawn",
        ),
    ],
)
def test_each_gap_alone_is_refused_and_named(
    consent_changes: dict[str, Any], message_changes: dict[str, Any], gap: ScopeGap, detail: str
) -> None:
    refused = refusal(replace(CONSENT, **consent_changes), replace(MESSAGE, **message_changes))
    assert refused.gaps == (gap,)
    assert refused.detail == detail


def test_every_gap_is_listed_together_in_order() -> None:
    consent = replace(CONSENT, withdrawn_at=T0 + timedelta(days=1))
    message = replace(
        MESSAGE,
        type=MessageType.CASE_MONITORING,
        case_ref="GB-2025-0009",
        recipient="fr.ofpra",
        recipient_country="FR",
        data_categories=frozenset({DataCategory.LEGAL, DataCategory.CONTACT}),
        at=T0 + timedelta(days=400),
    )
    refused = refusal(consent, message)
    assert refused.gaps == (
        ScopeGap.WITHDRAWN,
        ScopeGap.EXPIRED,
        ScopeGap.CASE,
        ScopeGap.PURPOSE,
        ScopeGap.RECIPIENT,
        ScopeGap.DATA_CATEGORIES,
    )
    assert refused.detail == (
        "consent c-1 was withdrawn at 2025-03-02T12:00:00Z; expired at 2026-03-01T12:00:00Z;"
        " does not cover case GB-2025-0009; does not cover message type case_monitoring;"
        " does not allow data to go to fr.ofpra (or its country FR);"
        " does not cover data categories contact, legal"
    )


def test_not_yet_valid_and_withdrawn_are_both_reported() -> None:
    consent = replace(CONSENT, withdrawn_at=T0 - timedelta(days=2))
    refused = refusal(consent, replace(MESSAGE, at=T0 - timedelta(days=1)))
    assert refused.gaps == (ScopeGap.WITHDRAWN, ScopeGap.NOT_YET_VALID)


@pytest.mark.parametrize(
    ("at", "covered"),
    [
        pytest.param(T0 - TICK, False, id="just-before-valid_from"),
        pytest.param(T0, True, id="valid_from-inclusive"),
        pytest.param(T0 + timedelta(days=365) - TICK, True, id="just-before-valid_until"),
        pytest.param(T0 + timedelta(days=365), False, id="valid_until-exclusive"),
    ],
)
def test_validity_boundaries(at: datetime, covered: bool) -> None:
    assert CONSENT.covers(replace(MESSAGE, at=at)) is covered


def test_open_ended_consent_stays_valid() -> None:
    consent = replace(CONSENT, valid_until=None)
    check(consent, replace(MESSAGE, at=T0 + timedelta(days=3650)))


def test_validity_compares_instants_not_wall_clocks() -> None:
    lagos = timezone(timedelta(hours=1))
    at = datetime(2025, 3, 1, 12, 30, tzinfo=lagos)  # 11:30 UTC: before valid_from
    assert refusal(CONSENT, replace(MESSAGE, at=at)).gaps == (ScopeGap.NOT_YET_VALID,)


@pytest.mark.parametrize(
    ("offset", "covered"),
    [
        pytest.param(-TICK, True, id="before-withdrawal"),
        pytest.param(timedelta(0), False, id="at-withdrawal"),
        pytest.param(timedelta(days=30), False, id="after-withdrawal"),
    ],
)
def test_withdrawal_takes_effect_at_once(offset: timedelta, covered: bool) -> None:
    withdrawn_at = T0 + timedelta(days=2)
    consent = replace(CONSENT, withdrawn_at=withdrawn_at)
    assert consent.covers(replace(MESSAGE, at=withdrawn_at + offset)) is covered


def test_a_whole_country_may_be_allowed() -> None:
    consent = replace(CONSENT, recipients=frozenset(), recipient_countries=frozenset({"GB"}))
    check(consent, replace(MESSAGE, recipient="gb.shelter", recipient_country="GB"))
    check(consent, replace(MESSAGE, recipient="gb.nrm", recipient_country="GB"))
    refused = refusal(consent, replace(MESSAGE, recipient="fr.ofpra", recipient_country="FR"))
    assert refused.gaps == (ScopeGap.RECIPIENT,)


def test_named_recipient_and_country_combine() -> None:
    consent = replace(CONSENT, recipient_countries=frozenset({"FR"}))
    check(consent, MESSAGE)  # gb.nrm, named
    check(consent, replace(MESSAGE, recipient="fr.ofpra", recipient_country="FR"))


def test_the_registering_focal_point_may_always_receive() -> None:
    # Replies to the sending focal point (e.g. a risk_assessment from the country of return)
    # disclose nothing to a new party: it collected the consent and holds the data.
    message = replace(
        MESSAGE,
        type=MessageType.RISK_ASSESSMENT,
        sender="gb.nrm",
        recipient="ng.naptip",
        recipient_country="NG",
    )
    check(CONSENT, message)


def test_a_message_without_data_categories_needs_none() -> None:
    check(CONSENT, replace(MESSAGE, data_categories=frozenset()))


@pytest.mark.parametrize("message_type", list(MessageType))
def test_consent_is_needed_for_every_type_but_withdrawal(message_type: MessageType) -> None:
    needed = message_type is not MessageType.CONSENT_WITHDRAWAL
    assert consent_needed(message_type, {DataCategory.IDENTITY}) is needed
    # Without personal data too: only a closure (its reason is in the clear header) is free.
    assert consent_needed(message_type, set()) is (needed and message_type is not CLOSURE)


def test_a_closure_carrying_notes_needs_a_consent_one_carrying_nothing_does_not() -> None:
    # A case can always be closed, also after withdrawal; its notes cannot travel uncovered.
    assert consent_needed(CLOSURE, {DataCategory.OTHER})
    assert not consent_needed(CLOSURE, frozenset())


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"valid_from": datetime(2025, 3, 1)}, id="naive-valid_from"),
        pytest.param({"valid_until": datetime(2026, 3, 1)}, id="naive-valid_until"),
        pytest.param({"withdrawn_at": datetime(2025, 3, 2)}, id="naive-withdrawn_at"),
        pytest.param({"valid_until": T0}, id="empty-validity"),
        pytest.param({"valid_until": T0 - TICK}, id="reversed-validity"),
    ],
)
def test_malformed_consent_is_rejected_on_construction(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"valid|aware"):
        replace(CONSENT, **changes)


def test_naive_acceptance_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        replace(MESSAGE, at=datetime(2025, 3, 2))


# Property: the refusal agrees with a plain reading of docs/design.md §7, gap by gap.

PARTICIPANTS = st.sampled_from(["gb.nrm", "gb.shelter", "fr.ofpra", "ng.naptip", "ng.shelter"])
COUNTRY_OF = {"gb": "GB", "fr": "FR", "ng": "NG"}
DAYS = st.integers(min_value=-30, max_value=30).map(lambda days: T0 + timedelta(days=days))


@st.composite
def consents(draw: st.DrawFn) -> Consent:
    valid_from = draw(DAYS)
    return Consent(
        id="c-p",
        case_ref=draw(st.sampled_from([CASE, "NG-2025-0002"])),
        registered_by="ng.naptip",
        given_by=draw(st.sampled_from(GivenBy)),
        purposes=draw(st.frozensets(st.sampled_from(MessageType))),
        recipients=draw(st.frozensets(PARTICIPANTS)),
        recipient_countries=draw(st.frozensets(st.sampled_from(["GB", "FR", "NG"]))),
        data_categories=draw(st.frozensets(st.sampled_from(DataCategory))),
        valid_from=valid_from,
        valid_until=draw(st.none() | st.integers(1, 40).map(lambda d: valid_from + timedelta(d))),
        withdrawn_at=draw(st.none() | DAYS),
    )


@st.composite
def messages(draw: st.DrawFn) -> MessageFacts:
    recipient = draw(PARTICIPANTS)
    return MessageFacts(
        type=draw(st.sampled_from(MessageType)),
        case_ref=CASE,
        sender="ng.naptip",
        recipient=recipient,
        recipient_country=COUNTRY_OF[recipient[:2]],
        data_categories=draw(st.frozensets(st.sampled_from(DataCategory))),
        at=draw(DAYS),
    )


@given(consents(), messages())
def test_gaps_match_the_scope_rules(consent: Consent, message: MessageFacts) -> None:
    expected = []
    if consent.withdrawn_at is not None and message.at >= consent.withdrawn_at:
        expected.append(ScopeGap.WITHDRAWN)
    if message.at < consent.valid_from:
        expected.append(ScopeGap.NOT_YET_VALID)
    if consent.valid_until is not None and message.at >= consent.valid_until:
        expected.append(ScopeGap.EXPIRED)
    if consent.case_ref != message.case_ref:
        expected.append(ScopeGap.CASE)
    if message.type not in consent.purposes:
        expected.append(ScopeGap.PURPOSE)
    allowed = consent.recipients | {consent.registered_by}
    if message.recipient not in allowed and message.recipient_country not in (
        consent.recipient_countries
    ):
        expected.append(ScopeGap.RECIPIENT)
    if not message.data_categories <= consent.data_categories:
        expected.append(ScopeGap.DATA_CATEGORIES)

    assert consent.gaps(message) == tuple(expected)
    assert consent.covers(message) is (not expected)
    if expected:
        refused = refusal(consent, message)
        assert refused.detail.startswith("consent c-p ")
        assert refused.detail.count(";") == len(expected) - 1
    else:
        check(consent, message)
