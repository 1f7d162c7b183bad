"""The envelope model: a well-formed referral validates; malformed or inconsistent ones do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from trm_broker.crypto.seal import SUITE_X25519 as SUITE
from trm_broker.domain.envelope import Envelope, is_fresh
from trm_broker.domain.messages import DataCategory, MessageType

MESSAGE_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def referral(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "v": 1,
        "id": MESSAGE_ID,
        "type": "referral",
        "case_ref": "NG-2025-0001",
        "sender": "ng.naptip",
        "recipient": "gb.nrm",
        "created_at": "2025-03-01T12:00:00Z",
        "consent_ref": "consent:NG-2025-0001:1",
        "data_categories": ["identity", "health"],
        "header": {"destination_country": "GB", "subject_is_minor": False},
        "sealed": {"suite": SUITE, "kid": "kid", "enc": "AAAA", "ct": "AAAA"},
    }
    document.update(changes)
    return document


def refused(document: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate(document)


def test_valid_referral_validates() -> None:
    envelope = Envelope.model_validate(referral())
    assert envelope.type is MessageType.REFERRAL
    assert envelope.data_categories == [DataCategory.IDENTITY, DataCategory.HEALTH]
    assert envelope.created_at == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert envelope.in_reply_to is None


def test_reply_with_matching_header_validates() -> None:
    envelope = Envelope.model_validate(
        referral(
            type="referral_response",
            sender="gb.nrm",
            recipient="ng.naptip",
            header={"accepted": True},
            in_reply_to=MESSAGE_ID,
            data_categories=[],
        )
    )
    assert envelope.type is MessageType.REFERRAL_RESPONSE


@pytest.mark.parametrize(
    "header",
    [
        {"accepted": True},  # a referral_response header on a referral
        {"destination_country": "GB"},  # missing fact
        {"destination_country": "gb", "subject_is_minor": False},  # bad country
        {"destination_country": "GB", "subject_is_minor": False, "name": "A. Person"},  # free text
        {},
    ],
)
def test_header_that_does_not_fit_the_type_is_refused(header: dict[str, Any]) -> None:
    refused(referral(header=header))


def test_risk_assessment_header_on_a_referral_is_refused() -> None:
    header = {"risk_level": "low", "return_recommended": True, "assessed_at": "2025-03-01T09:00Z"}
    refused(referral(header=header))
    assert Envelope.model_validate(referral(type="risk_assessment", header=header))


@pytest.mark.parametrize(
    "extra",
    [{"subject_name": "A. Person"}, {"payload": "clear text"}, {"V": 1}],
)
def test_extra_members_are_refused(extra: dict[str, Any]) -> None:
    refused({**referral(), **extra})


def test_extra_member_in_sealed_is_refused() -> None:
    refused(referral(sealed={"suite": SUITE, "kid": "k", "enc": "AAAA", "ct": "AAAA", "iv": "AA"}))


def test_sender_equal_to_recipient_is_refused() -> None:
    refused(referral(recipient="ng.naptip"))


def test_repeated_data_categories_are_refused() -> None:
    refused(referral(data_categories=["identity", "health", "identity"]))


def test_unknown_data_category_is_refused() -> None:
    refused(referral(data_categories=["biometrics"]))


@pytest.mark.parametrize(
    "case_ref",
    ["", "ab", "-NG-2025", ".NG", "NG 2025 0001", "NG/2025", "NG-2025\n", "N" * 65, "NG-é-2025"],
)
def test_bad_case_ref_is_refused(case_ref: str) -> None:
    refused(referral(case_ref=case_ref))


@pytest.mark.parametrize("case_ref", ["abc", "NG-2025-0001", "a.b_c-d", "N" * 64])
def test_good_case_refs_validate(case_ref: str) -> None:
    assert Envelope.model_validate(referral(case_ref=case_ref)).case_ref == case_ref


@pytest.mark.parametrize(
    "changes",
    [
        {"v": 2},
        {"id": "0190a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b"},  # UUIDv4
        {"id": MESSAGE_ID + "\n"},
        {"in_reply_to": "not-a-uuid"},
        {"type": "gossip"},
        {"sender": "NG.NAPTIP"},
        {"created_at": "2025-03-01T12:00:00"},  # no time zone
        {"sealed": {"suite": SUITE, "kid": "k", "enc": "AA==", "ct": "AAAA"}},
    ],
)
def test_malformed_fields_are_refused(changes: dict[str, Any]) -> None:
    refused(referral(**changes))


def test_envelope_is_immutable() -> None:
    envelope = Envelope.model_validate(referral())
    with pytest.raises(ValidationError):
        envelope.case_ref = "OTHER-REF"  # type: ignore[misc]


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [
        (timedelta(0), True),
        (SKEW, True),  # exactly at the edge, either side
        (-SKEW, True),
        (SKEW + timedelta(microseconds=1), False),
        (-SKEW - timedelta(microseconds=1), False),
        (timedelta(days=1), False),
    ],
)
def test_is_fresh_window_edges(offset: timedelta, fresh: bool) -> None:
    assert is_fresh(NOW + offset, NOW, SKEW) is fresh


def test_is_fresh_compares_instants_not_wall_clocks() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert is_fresh(datetime(2025, 3, 1, 14, 4, tzinfo=plus_two), NOW, SKEW)
    assert not is_fresh(datetime(2025, 3, 1, 12, 4, tzinfo=plus_two), NOW, SKEW)


def test_only_supported_suites_are_accepted_in_the_clear() -> None:
    refused(referral(sealed={"suite": "free text", "kid": "k", "enc": "AAAA", "ct": "AAAA"}))
