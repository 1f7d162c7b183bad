"""Sealed payload schemas: every type takes a full and a minimal form, refuses what its schema
does not allow, explains refusals without echoing the payload, and agrees with its published
JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trm_broker.contract.schemas import CONTRACTS_DIR
from trm_broker.dev.demo_case import DEMO_REFERRAL
from trm_broker.domain.countries import COUNTRY_CODES
from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import MAX_REASONS, PAYLOAD_MODELS, check_payload

T = MessageType

FULL: dict[MessageType, dict[str, Any]] = {
    T.REFERRAL: {
        "destination_country": "NG",
        "identification_summary": "Identified during a labour inspection at a farm.",
        "identified_on": "2026-10-02",
        "trafficking_status": "possible_victim_of_trafficking",
        "person": {
            "given_name": "Ada",
            "family_name": "Example",
            "date_of_birth": "1999-04-01",
            "gender": "female",
            "nationality": "NG",
        },
        "is_child": False,
        "form_of_exploitation": "forced_labour",
        "other_forms_of_exploitation": ["sexual_exploitation"],
        "labour_exploitation": ["agriculture"],
        "sexual_exploitation": ["prostitution"],
        "means_of_control": ["debt_bondage", "withholds_documents"],
        "immediate_needs": ["shelter", "medical_check", "legal_counselling"],
        "languages": ["en", "pcm"],
        "interpreter_needed": True,
        "notes": "Prefers a female case worker.",
    },
    T.REFERRAL_RESPONSE: {
        "accepted": False,
        "decline_reason": "no_service_capacity",
        "contact_point": "Case desk, NAPTIP Lagos zonal command",
        "notes": "Please re-refer in two weeks.",
    },
    T.RISK_ASSESSMENT: {
        "risk_level": "medium",
        "recommendation": "return_with_conditions",
        "assessed_at": "2026-11-20T10:00:00+01:00",
        "threats": {
            "traffickers": {"identified": True, "level": "medium", "notes": "Recruiter at large."},
            "family": {"identified": False},
            "community": {"level": "low"},
            "stigma": {"identified": True, "level": "low"},
            "re_trafficking": {"identified": True, "level": "medium"},
        },
        "protective_factors": ["supportive_family", "access_to_services"],
        "family_situation": "Mother and two siblings in Benin City.",
        "health": {"medical_needs": True, "psychological_needs": True, "fit_to_travel": True},
        "assessor_organisation": "IOM Vienna",
        "assessor_organisation_type": "international_organisation",
        "notes": "Reassess if the recruiter is not arrested.",
    },
    T.RETURN_PREPARATION: {
        "receiving_org": "ng.shelter",
        "planned_arrival": "2026-12-01T17:05:00Z",
        "travel_date": "2026-12-01",
        "route": [
            {
                "mode": "air",
                "departure_place": "VIE",
                "arrival_place": "LOS",
                "departs_at": "2026-12-01T09:40:00+01:00",
                "arrives_at": "2026-12-01T17:05:00Z",
                "reference": "OS 0000",
            }
        ],
        "travel_documents": {"status": "issued", "kind": "emergency_travel_document"},
        "escort": {"required": True, "roles": ["social_worker"], "organisation": "IOM"},
        "health": {"medical_needs": True, "notes": "Daily medication; two weeks' supply."},
        "family_tracing": {"outcome": "found", "notes": "Mother agrees to receive her."},
        "reintegration_plan": {
            "services": ["shelter", "vocational_training", "psychological_support"],
            "accommodation_arranged": True,
            "responsible_organisation": "NGO in Benin City",
        },
        "guardian": {
            "name": "A. Guardian",
            "organisation": "Youth office",
            "appointed_on": "2026-10-10",
        },
        "best_interests_determination": {
            "ref": "BID-2026-0007",
            "decided_on": "2026-11-01",
            "decided_by": "Child protection panel",
            "outcome": "return_in_best_interests",
        },
    },
    T.RECEPTION_CONFIRMATION: {
        "outcome": "received",
        "received_by": {"name": "B. Officer", "role": "case worker", "organisation": "NGO"},
        "received_at": "2026-12-01T17:40:00Z",
        "place": "Lagos airport, arrivals",
    },
    T.CASE_MONITORING: {
        "period_start": "2026-12-01",
        "period_end": "2027-02-28",
        "contact": "home_visit",
        "services_received": ["shelter", "education"],
        "wellbeing": {"economic": "fair", "social": "good", "psychosocial": "fair"},
        "re_trafficking_risk": "low",
        "notes": "Enrolled in a tailoring course.",
    },
    T.CASE_CLOSURE: {"reason": "monitoring_completed", "notes": "No further needs."},
    T.CONSENT_WITHDRAWAL: {"withdrawn_on": "2026-11-30", "notes": "Withdrawn in person."},
    T.RECEPTION_PLAN_RESPONSE: {
        "readiness": "cannot_receive",
        "cannot_receive_reason": "date_not_possible",
        "needs": ["medical_check", "shelter"],
        "contact_person": "Reception desk, NGO Benin City",
        "notes": "Possible one week later.",
    },
    T.PRE_DEPARTURE_CONTACT: {
        "contacted_at": "2026-11-28T09:00:00+01:00",
        "mode": "video",
        "counselling_given": True,
        "languages": ["en", "pcm"],
        "notes": "Met her future case worker.",
    },
}

#: The members each type requires: the facts its clear header is computed from.
MINIMAL: dict[MessageType, dict[str, Any]] = {
    T.REFERRAL: {"destination_country": "NG"},
    T.REFERRAL_RESPONSE: {"accepted": True},
    T.RISK_ASSESSMENT: {
        "risk_level": "low",
        "recommendation": "return",
        "assessed_at": "2026-11-20T09:00:00Z",
    },
    T.RETURN_PREPARATION: {
        "receiving_org": "ng.shelter",
        "planned_arrival": "2026-12-01T17:05:00Z",
    },
    T.RECEPTION_CONFIRMATION: {"outcome": "not_arrived", "received_at": "2026-12-01T18:00:00Z"},
    T.CASE_MONITORING: {"period_start": "2027-01-01", "period_end": "2027-03-31"},
    T.CASE_CLOSURE: {"reason": "other"},
    T.CONSENT_WITHDRAWAL: {},
    T.RECEPTION_PLAN_RESPONSE: {"readiness": "ready"},
    T.PRE_DEPARTURE_CONTACT: {"contacted_at": "2026-11-28T08:00:00Z"},
}

#: For each type with codes, a member holding one (a path to it, and the path's reason).
BAD_CODE: dict[MessageType, tuple[dict[str, Any], str]] = {
    T.REFERRAL: ({"form_of_exploitation": "CANARY"}, "form_of_exploitation"),
    T.REFERRAL_RESPONSE: ({"decline_reason": "CANARY"}, "decline_reason"),
    T.RISK_ASSESSMENT: ({"recommendation": "CANARY"}, "recommendation"),
    T.RETURN_PREPARATION: (
        {"reintegration_plan": {"services": ["CANARY"]}},
        "reintegration_plan/services/0",
    ),
    T.RECEPTION_CONFIRMATION: ({"outcome": "CANARY"}, "outcome"),
    T.CASE_MONITORING: ({"re_trafficking_risk": "CANARY"}, "re_trafficking_risk"),
    T.CASE_CLOSURE: ({"reason": "CANARY"}, "reason"),
    T.RECEPTION_PLAN_RESPONSE: ({"needs": ["CANARY"]}, "needs/0"),
    T.PRE_DEPARTURE_CONTACT: ({"mode": "CANARY"}, "mode"),
}

#: For each type, a member of a JSON type other than string where one exists, else text.
TYPED_MEMBER: dict[MessageType, str] = {
    T.REFERRAL: "is_child",
    T.REFERRAL_RESPONSE: "contact_point",
    T.RISK_ASSESSMENT: "protective_factors",
    T.RETURN_PREPARATION: "travel_date",
    T.RECEPTION_CONFIRMATION: "received_at",
    T.CASE_MONITORING: "period_start",
    T.CASE_CLOSURE: "notes",
    T.CONSENT_WITHDRAWAL: "withdrawn_on",
    T.RECEPTION_PLAN_RESPONSE: "needs",
    T.PRE_DEPARTURE_CONTACT: "counselling_given",
}
TEXT_MEMBERS = {"contact_point", "notes"}

CANARY = "CANARY7Q2XJ"


def check(message_type: MessageType, payload: object) -> list[str]:
    return check_payload(message_type, json.dumps(payload))


def test_every_type_has_a_payload_model() -> None:
    assert set(PAYLOAD_MODELS) == set(MessageType) == set(FULL) == set(MINIMAL)


@pytest.mark.parametrize("message_type", list(MessageType))
@pytest.mark.parametrize("examples", [FULL, MINIMAL], ids=["full", "minimal"])
def test_a_full_and_a_minimal_form_conform(
    message_type: MessageType, examples: dict[MessageType, dict[str, Any]]
) -> None:
    payload = examples[message_type]
    assert check(message_type, payload) == []
    model = PAYLOAD_MODELS[message_type].model_validate_json(json.dumps(payload), strict=True)
    assert model.model_dump(mode="json", exclude_unset=True).keys() == payload.keys()


@pytest.mark.parametrize(
    "payload",
    [
        DEMO_REFERRAL,
        {"destination_country": "NG", "form_of_exploitation": "forced_labour", "languages": ["en"]},
        {"destination_country": "NG", "languages": ["en"], "is_child": False},
        {"destination_country": "GH", "identification_summary": "Jane Doe, from Benin City"},
    ],
)
def test_referral_payloads_the_demo_and_tests_send_still_conform(payload: dict[str, Any]) -> None:
    assert check(T.REFERRAL, payload) == []


@pytest.mark.parametrize("message_type", list(MessageType))
def test_an_unknown_member_is_refused_without_naming_it(message_type: MessageType) -> None:
    reasons = check(message_type, {**MINIMAL[message_type], CANARY: "x"})
    assert reasons == ["payload: unknown member"]


def test_an_unknown_member_of_a_part_is_located_at_its_parent() -> None:
    reasons = check(T.REFERRAL, {**MINIMAL[T.REFERRAL], "person": {"given_name": "A", CANARY: 1}})
    assert reasons == ["payload/person: unknown member"]


@pytest.mark.parametrize("message_type", list(BAD_CODE))
def test_a_bad_code_is_refused(message_type: MessageType) -> None:
    bad, location = BAD_CODE[message_type]
    reasons = check(message_type, {**MINIMAL[message_type], **bad})
    assert reasons == [f"payload/{location}: not a known code"]


@pytest.mark.parametrize("message_type", list(MessageType))
def test_a_wrong_type_is_refused_even_where_lax_parsing_would_coerce(
    message_type: MessageType,
) -> None:
    member = TYPED_MEMBER[message_type]
    wrongs: list[object] = [1, 0.5, [CANARY], {"x": CANARY}]
    if member not in TEXT_MEMBERS:
        wrongs += ["true", "1", CANARY]  # a string where a boolean, a date or a list is due
    for wrong in wrongs:
        reasons = check(message_type, {**MINIMAL[message_type], member: wrong})
        assert len(reasons) == 1, (wrong, reasons)
        assert reasons[0].startswith(f"payload/{member}")
        assert CANARY not in reasons[0]


@pytest.mark.parametrize(
    ("message_type", "payload", "reason"),
    [
        (
            T.REFERRAL,
            {"immediate_needs": ["shelter", "spa"]},
            "immediate_needs/1: not a known code",
        ),
        (T.REFERRAL, {"languages": ["English"]}, "languages/0: not in the expected format"),
        (T.REFERRAL, {"person": {"nationality": "ZZ"}}, "person/nationality: not an ISO"),
        (T.REFERRAL, {"identified_on": "2026-02-30"}, "identified_on: expected a date"),
        (T.REFERRAL, {"notes": ""}, "notes: empty"),
        (T.REFERRAL, {"notes": "x" * 4001}, "notes: too long"),
        (T.REFERRAL, {"means_of_control": ["threats"] * 33}, "means_of_control: too many items"),
        (T.RISK_ASSESSMENT, {"recommendation": None}, "recommendation: required"),
        (T.REFERRAL, {"destination_country": None}, "destination_country: required"),
        (T.RETURN_PREPARATION, {"receiving_org": None}, "receiving_org: required"),
        (
            T.RETURN_PREPARATION,
            {"receiving_org": "Shelter in Lagos"},
            "receiving_org: not in the expected format",
        ),
        (T.CASE_CLOSURE, {"reason": None}, "reason: required"),
        (T.REFERRAL_RESPONSE, {"accepted": None}, "accepted: required"),
        (
            T.REFERRAL_RESPONSE,
            {"decline_reason": "no_service_capacity"},
            ": decline_reason is only for a referral not accepted",
        ),
        (
            T.RECEPTION_PLAN_RESPONSE,
            {"readiness": "cannot_receive"},
            ": cannot_receive_reason is given exactly when readiness is cannot_receive",
        ),
        (
            T.RECEPTION_CONFIRMATION,
            {"outcome": "received", "received_at": "2026-12-01T17:40:00"},
            "received_at: expected an RFC 3339 date-time with a time offset",
        ),
        (
            T.RECEPTION_CONFIRMATION,
            {"outcome": "received", "reason_not_received": "did_not_travel"},
            ": reason_not_received is only for a person not received",
        ),
        (
            T.CASE_MONITORING,
            {"period_start": "2027-03-31", "period_end": "2027-01-01"},
            ": period_end is before period_start",
        ),
        (
            T.RECEPTION_CONFIRMATION,
            {"outcome": "received", "received_at": "1700000000"},
            "received_at: expected an RFC 3339 date-time with a time offset",
        ),
        (
            T.RECEPTION_CONFIRMATION,
            {"outcome": "received", "received_at": "2026-02-30T10:00:00Z"},
            "received_at: not a valid date-time",
        ),
        (T.CASE_CLOSURE, [], ": expected an object"),
        (
            T.RECEPTION_PLAN_RESPONSE,
            {"readiness": "ready", "cannot_receive_reason": "no_capacity"},
            ": cannot_receive_reason is given exactly when readiness is cannot_receive",
        ),
        (
            T.PRE_DEPARTURE_CONTACT,
            {"contacted_at": "2026-11-28T10:00:00"},
            "contacted_at: expected an RFC 3339 date-time with a time offset",
        ),
    ],
)
def test_each_rule_is_named_by_location(
    message_type: MessageType, payload: object, reason: str
) -> None:
    if isinstance(payload, dict):  # the type's minimal form, changed (None: left out)
        changed = {**MINIMAL[message_type], **payload}
        payload = {name: value for name, value in changed.items() if value is not None}
    reasons = check(message_type, payload)
    assert len(reasons) == 1
    assert reasons[0].startswith("payload"), reasons
    assert reason in reasons[0], reasons


def test_reasons_never_carry_payload_content_and_are_bounded() -> None:
    payload = {
        CANARY: CANARY,
        "identification_summary": CANARY * 1000,
        "person": {"given_name": CANARY * 100, "nationality": CANARY, CANARY: 1},
        "immediate_needs": [CANARY] * 32,
        "languages": [CANARY],
        "is_child": CANARY,
        "identified_on": CANARY,
    }
    reasons = check(T.REFERRAL, payload)
    assert len(reasons) == MAX_REASONS
    assert reasons[-1].startswith("payload: ")
    assert reasons[-1].endswith("more errors")
    assert all(CANARY.lower() not in r.lower() and len(r) <= 200 for r in reasons)


def test_text_that_is_not_json_is_refused() -> None:
    assert check_payload(T.REFERRAL, b"{not json") == ["payload: not JSON"]


# --- The published schema and the model agree -------------------------------------------


def from_schema(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Documents the JSON Schema allows (the subset the payload schemas use)."""
    if "$ref" in node:
        return from_schema(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        return st.one_of([from_schema(option, defs) for option in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(node["items"], defs), max_size=min(node.get("maxItems", 3), 3))
    if kind == "object":
        properties = {k: from_schema(v, defs) for k, v in node.get("properties", {}).items()}
        required = set(node.get("required", []))
        return st.fixed_dictionaries(
            {k: v for k, v in properties.items() if k in required},
            optional={k: v for k, v in properties.items() if k not in required},
        )
    assert kind == "string", node
    if node.get("format") == "date":
        return st.dates().map(date.isoformat)
    if node.get("format") == "date-time":
        return st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat())
    if node.get("pattern") == "^[A-Z]{2}$":  # a country: the schema cannot list them all
        return st.sampled_from(sorted(COUNTRY_CODES))
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True)
    return st.text(min_size=node.get("minLength", 0), max_size=min(node.get("maxLength", 20), 20))


def published(message_type: MessageType) -> dict[str, Any]:
    path = CONTRACTS_DIR / f"schemas/payloads/{message_type.value}.v1.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


#: The rules a JSON Schema cannot state, checked by the model across members.
CROSS_MEMBER_RULES = {
    "payload: reason_not_received is only for a person not received",
    "payload: period_end is before period_start",
    "payload: decline_reason is only for a referral not accepted",
    "payload: cannot_receive_reason is given exactly when readiness is cannot_receive",
}


@pytest.mark.parametrize("message_type", list(MessageType))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_the_published_schema_allows_the_model_takes_and_round_trips(
    message_type: MessageType, data: st.DataObject
) -> None:
    schema = published(message_type)
    document = data.draw(from_schema(schema, schema.get("$defs", {})))
    reasons = check(message_type, document)
    assert set(reasons) <= CROSS_MEMBER_RULES
    if reasons:
        return
    model_type = PAYLOAD_MODELS[message_type]
    model = model_type.model_validate_json(json.dumps(document), strict=True)
    again = model_type.model_validate_json(model.model_dump_json(exclude_unset=True), strict=True)
    assert again == model
    assert check_payload(message_type, model.model_dump_json(exclude_unset=True)) == []
