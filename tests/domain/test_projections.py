"""The clear header is a projection of the sealed payload (trm_broker/domain/projections.py):
what the sending node computes, the receiving node's check agrees with, for any payload of
any type; and any header field or category set changed after the fact is caught."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.domain.test_payloads import CROSS_MEMBER_RULES, FULL, MINIMAL, from_schema, published
from tests.pace import examples
from trm_broker.contract.schemas import CONTRACTS_DIR
from trm_broker.crypto.canonical import canonical_json
from trm_broker.domain.countries import COUNTRY_CODES
from trm_broker.domain.messages import HEADER_MODELS, DataCategory, MessageType
from trm_broker.domain.payloads import (
    CATEGORY_KEY,
    HEADER_KEY,
    PAYLOAD_MODELS,
    check_payload,
    read_payload,
)
from trm_broker.domain.projections import age_on, mismatches, project

T = MessageType
#: Header fields the published header schema cannot generate valid values for by itself.
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "destination_country": st.sampled_from(sorted(COUNTRY_CODES)),
}


def payloads(message_type: MessageType) -> st.SearchStrategy[dict[str, Any]]:
    """Payloads of ``message_type`` its published schema allows and its model takes (the
    few cross-member rules a schema cannot state are filtered out)."""
    schema = published(message_type)

    def conforms(document: dict[str, Any]) -> bool:
        reasons = check_payload(message_type, json.dumps(document))
        assert set(reasons) <= CROSS_MEMBER_RULES, reasons
        return not reasons

    return from_schema(schema, schema.get("$defs", {})).filter(conforms)


#: When a message is made: any offset, so the day it was made in UTC may differ from the
#: local one.
made_at = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)


def received(message_type: MessageType, payload: dict[str, Any]) -> BaseModel:
    """The payload as the receiving node reads it: from the canonical JSON that was sealed."""
    return read_payload(message_type, canonical_json(payload))


def header_schema(message_type: MessageType) -> dict[str, Any]:
    path = CONTRACTS_DIR / f"schemas/headers/{message_type.value}.v1.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


# --- (a) the sender's header always passes the receiver's check -----------------------------


@pytest.mark.parametrize("message_type", list(MessageType))
@settings(max_examples=examples(60))
@given(data=st.data(), created_at=made_at)
def test_the_header_a_sender_computes_is_what_the_receiver_finds(
    message_type: MessageType, data: st.DataObject, created_at: datetime
) -> None:
    payload = data.draw(payloads(message_type))
    # The sender: the payload as the case worker gave it, projected at its created_at.
    sent = project(message_type, read_payload(message_type, json.dumps(payload)), created_at)
    # What travels: JSON, the created_at as the envelope spells it.
    header = json.loads(json.dumps(sent.header_json()))
    categories = json.loads(json.dumps(sent.categories_json()))
    arrived_at = datetime.fromisoformat(created_at.isoformat())
    model = received(message_type, payload)
    assert mismatches(message_type, model, arrived_at, header, categories) == []
    assert HEADER_MODELS[message_type].model_validate(header) == sent.header


# --- (b) anything changed after the fact is caught ------------------------------------------


@pytest.mark.parametrize(
    ("message_type", "field"),
    [(t, name) for t in MessageType for name in HEADER_MODELS[t].model_fields],
)
@settings(max_examples=examples(40))
@given(data=st.data(), created_at=made_at)
def test_any_header_field_changed_is_reported_by_its_name(
    message_type: MessageType, field: str, data: st.DataObject, created_at: datetime
) -> None:
    payload = data.draw(payloads(message_type))
    projection = project(message_type, received(message_type, payload), created_at)
    schema = header_schema(message_type)
    if field in _FIELD_VALUES:
        values = _FIELD_VALUES[field]
    else:
        values = from_schema(schema["properties"][field], schema.get("$defs", {}))
    other = data.draw(values)
    header = projection.header_json() | {field: other}
    changed = HEADER_MODELS[message_type].model_validate(header)  # still a valid header
    assume(getattr(changed, field) != getattr(projection.header, field))
    found = mismatches(
        message_type,
        received(message_type, payload),
        created_at,
        header,
        projection.categories_json(),
    )
    assert found == [f"header/{field}"]


@pytest.mark.parametrize("message_type", list(MessageType))
@settings(max_examples=examples(40))
@given(data=st.data(), created_at=made_at)
def test_any_other_set_of_data_categories_is_reported(
    message_type: MessageType, data: st.DataObject, created_at: datetime
) -> None:
    payload = data.draw(payloads(message_type))
    projection = project(message_type, received(message_type, payload), created_at)
    declared = data.draw(st.frozensets(st.sampled_from(DataCategory)))
    assume(declared != projection.data_categories)
    found = mismatches(
        message_type,
        received(message_type, payload),
        created_at,
        projection.header_json(),
        sorted(declared),
    )
    assert found == ["data_categories"]


def test_a_header_that_is_no_header_of_the_type_is_wrong_in_every_field() -> None:
    model = received(T.RISK_ASSESSMENT, MINIMAL[T.RISK_ASSESSMENT])
    at = datetime(2026, 11, 20, 10, tzinfo=UTC)
    found = mismatches(T.RISK_ASSESSMENT, model, at, {"accepted": True}, [])
    assert found == ["header/risk_level", "header/return_recommended", "header/assessed_at"]
    assert mismatches(T.RISK_ASSESSMENT, model, at, {}, ["no-such-category"]) == [
        "header/risk_level",
        "header/return_recommended",
        "header/assessed_at",
        "data_categories",
    ]


# --- a child's case -------------------------------------------------------------------------


def minor(payload: dict[str, Any], made: datetime) -> bool:
    header = project(T.REFERRAL, received(T.REFERRAL, payload), made).header_json()
    return bool(header["subject_is_minor"])


def born(day: str, is_child: bool | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"destination_country": "NG", "person": {"date_of_birth": day}}
    return payload if is_child is None else payload | {"is_child": is_child}


def test_a_date_of_birth_under_18_makes_a_childs_case_whatever_is_child_says() -> None:
    made = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert minor(born("2011-03-14", is_child=False), made)
    assert minor(born("2011-03-14"), made)
    assert minor(born("2008-12-07", is_child=False), made)  # 18 tomorrow
    assert not minor(born("2008-12-06", is_child=False), made)  # 18 today
    assert minor(born("1990-01-01", is_child=True), made)  # said a child: presumed one
    assert not minor({"destination_country": "NG"}, made)
    assert not minor({"destination_country": "NG", "person": {"given_name": "A"}}, made)


def test_someone_born_on_29_february_comes_of_age_on_1_march_in_a_common_year() -> None:
    assert age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17
    assert age_on(date(2008, 2, 29), date(2026, 3, 1)) == 18
    assert age_on(date(2008, 2, 29), date(2024, 2, 29)) == 16  # a leap year: on the day
    assert minor(born("2008-02-29"), datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert not minor(born("2008-02-29"), datetime(2026, 3, 1, 0, 30, tzinfo=UTC))


def test_the_day_a_message_was_made_is_its_day_in_utc() -> None:
    """Both nodes read the same created_at, whatever their time zones: late on 28 February
    in Rio is 1 March in UTC, when someone born on 29 February 2008 is 18."""
    in_rio = datetime(2026, 2, 28, 23, 30, tzinfo=timezone(timedelta(hours=-3)))
    assert not minor(born("2008-02-29"), in_rio)
    assert minor(born("2008-02-29"), in_rio.replace(hour=20))


def test_a_return_plan_naming_a_guardian_or_a_determination_is_a_childs() -> None:
    made = datetime(2026, 11, 1, tzinfo=UTC)
    base = MINIMAL[T.RETURN_PREPARATION]
    for extra, expected in [
        ({}, False),
        ({"guardian": {"organisation": "Youth office"}}, True),
        ({"best_interests_determination": {"ref": "BID-7"}}, True),
    ]:
        model = received(T.RETURN_PREPARATION, base | extra)
        header = project(T.RETURN_PREPARATION, model, made).header_json()
        assert header["subject_is_minor"] is expected, extra


def test_a_determination_against_return_is_in_the_header() -> None:
    plan = MINIMAL[T.RETURN_PREPARATION] | {
        "best_interests_determination": {
            "ref": "BID-7",
            "outcome": "return_not_in_best_interests",
        }
    }
    made = datetime(2026, 11, 1, tzinfo=UTC)
    header = project(T.RETURN_PREPARATION, received(T.RETURN_PREPARATION, plan), made)
    assert header.header_json() | {"planned_arrival": None} == {
        "receiving_org": "ng.shelter",
        "planned_arrival": None,
        "best_interests_ref": "BID-7",
        "best_interests_outcome": "return_not_in_best_interests",
        "subject_is_minor": True,
    }


# --- data categories ------------------------------------------------------------------------


def categories(message_type: MessageType, payload: dict[str, Any]) -> set[str]:
    made = datetime(2026, 11, 1, tzinfo=UTC)
    return set(project(message_type, received(message_type, payload), made).categories_json())


def test_the_categories_are_those_of_the_members_filled() -> None:
    assert categories(T.REFERRAL, MINIMAL[T.REFERRAL]) == set()  # facts only
    assert categories(T.REFERRAL, FULL[T.REFERRAL]) == {"identity", "legal", "other"}
    assert categories(T.RISK_ASSESSMENT, MINIMAL[T.RISK_ASSESSMENT]) == set()
    assert categories(T.RISK_ASSESSMENT, FULL[T.RISK_ASSESSMENT]) == {"family", "health", "other"}
    assert categories(T.RETURN_PREPARATION, FULL[T.RETURN_PREPARATION]) == {
        "family",
        "health",
        "legal",
        "other",
        "travel",
    }
    # An empty list or an absent member holds nothing.
    assert categories(T.REFERRAL, MINIMAL[T.REFERRAL] | {"languages": []}) == set()
    assert categories(T.REFERRAL, MINIMAL[T.REFERRAL] | {"languages": ["en"]}) == {"identity"}


def test_a_member_of_a_part_takes_the_category_of_its_part() -> None:
    health = {"health": {"fit_to_travel": True}}
    assert categories(T.RISK_ASSESSMENT, MINIMAL[T.RISK_ASSESSMENT] | health) == {"health"}
    # The date of birth is identity data as well as a fact; a name is the person's identity.
    dob = {"person": {"date_of_birth": "1990-01-01"}}
    assert categories(T.REFERRAL, MINIMAL[T.REFERRAL] | dob) == {"identity"}
    name = {"person": {"given_name": "A"}}
    assert categories(T.REFERRAL, MINIMAL[T.REFERRAL] | name) == {"identity"}


def test_a_best_interests_reference_and_outcome_alone_are_not_legal_data() -> None:
    plan = MINIMAL[T.RETURN_PREPARATION]
    facts = {"ref": "BID-7", "outcome": "return_in_best_interests"}
    determination = {"best_interests_determination": facts}
    assert categories(T.RETURN_PREPARATION, plan | determination) == set()
    decided = {"best_interests_determination": facts | {"decided_by": "Child protection panel"}}
    assert categories(T.RETURN_PREPARATION, plan | decided) == {"legal"}
    assert categories(T.RETURN_PREPARATION, plan | {"guardian": {"name": "A"}}) == {"legal"}


def test_health_data_in_a_payload_cannot_travel_as_no_data() -> None:
    plan = MINIMAL[T.RETURN_PREPARATION] | {"health": {"medical_needs": True}}
    made = datetime(2026, 11, 1, tzinfo=UTC)
    model = received(T.RETURN_PREPARATION, plan)
    header = project(T.RETURN_PREPARATION, model, made).header_json()
    assert mismatches(T.RETURN_PREPARATION, model, made, header, []) == ["data_categories"]
    assert mismatches(T.RETURN_PREPARATION, model, made, header, ["health"]) == []


# --- the published annotations ----------------------------------------------------------------


def _members(
    node: dict[str, Any], defs: dict[str, Any], path: str, in_category: bool
) -> list[tuple[str, dict[str, Any], bool]]:
    """Every member of a payload schema, nested ones too: (path, schema, whether a member
    it is part of gives it a category)."""
    if "$ref" in node:
        return _members(defs[node["$ref"].rsplit("/", 1)[-1]], defs, path, in_category)
    found: list[tuple[str, dict[str, Any], bool]] = []
    for option in node.get("anyOf", []):
        found += _members(option, defs, path, in_category)
    if "items" in node:
        found += _members(node["items"], defs, path + "/items", in_category)
    for name, member in node.get("properties", {}).items():
        found.append((f"{path}/{name}", member, in_category))
        found += _members(member, defs, f"{path}/{name}", in_category or CATEGORY_KEY in member)
    return found


@pytest.mark.parametrize("message_type", list(MessageType))
def test_every_payload_member_has_a_category_or_a_header_field_or_inherits_a_category(
    message_type: MessageType,
) -> None:
    schema = published(message_type)
    members = _members(schema, schema.get("$defs", {}), message_type.value, in_category=False)
    assert members
    unannotated = [
        path
        for path, member, inherited in members
        if not inherited and CATEGORY_KEY not in member and HEADER_KEY not in member
    ]
    assert unannotated == []
    for path, member, _ in members:
        if CATEGORY_KEY in member:
            assert member[CATEGORY_KEY] in set(DataCategory), path


@pytest.mark.parametrize("message_type", list(MessageType))
def test_every_header_field_is_computed_from_a_member_that_names_it(
    message_type: MessageType,
) -> None:
    schema = published(message_type)
    named = {
        field
        for _, member, _ in _members(schema, schema.get("$defs", {}), "", in_category=False)
        for field in member.get(HEADER_KEY, [])
    }
    assert named == set(HEADER_MODELS[message_type].model_fields)
    assert set(PAYLOAD_MODELS) == set(HEADER_MODELS)
