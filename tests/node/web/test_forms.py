"""Forms generated from the payload schemas (trm_broker/node/web/forms.py): every member of
every published payload schema has its field, every valid payload comes back whole from its
form data, and each error lands on the field it is about, in words, without the value."""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone, tzinfo
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.domain.test_payloads import FULL, MINIMAL, published
from tests.domain.test_projections import payloads
from tests.pace import examples
from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS
from trm_broker.node.web.forms import (
    FieldSpec,
    FormTexts,
    bind,
    error_summary,
    form_spec,
    form_values,
    grouped,
    read_form,
    walk,
)

T = MessageType
VIENNA = ZoneInfo("Europe/Vienna")
ZONES: list[tzinfo] = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=3))]


def members(
    node: dict[str, Any], defs: dict[str, Any], path: tuple[str, ...]
) -> set[tuple[str, ...]]:
    """Every member path of a published schema, through references, optionals and lists."""
    if "$ref" in node:
        return members(defs[node["$ref"].rsplit("/", 1)[-1]], defs, path)
    if "anyOf" in node:
        found: set[tuple[str, ...]] = set()
        for option in node["anyOf"]:
            found |= members(option, defs, path)
        return found
    if node.get("type") == "array":
        return members(node["items"], defs, path)
    found = set()
    for name, sub in node.get("properties", {}).items():
        found |= {(*path, name)} | members(sub, defs, (*path, name))
    return found


def render(bound: Any, errors: dict[str, str] | None = None) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("trm_broker.node.web", "templates"), autoescape=True
    )
    page = env.from_string(
        '{% import "_fields.html" as forms %}{{ forms.error_summary(summary, texts) }}'
        "<form>{{ forms.fields(bound, texts) }}</form>"
    )
    summary = error_summary(bound, errors or {})
    return page.render(bound=bound, texts=FormTexts.translated(), summary=summary)


class Page(HTMLParser):
    """The ids, input names, label targets and ARIA references of a rendered form."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.names: set[str] = set()
        self.labelled: set[str] = set()
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.links: list[str] = []
        self.legends = 0
        self.fieldsets = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag in ("input", "select", "textarea"):
            self.names.add(str(found["name"]))
            self.inputs[str(found["id"])] = found
        if tag == "label":
            self.labelled.add(str(found["for"]))
        if tag == "a":
            self.links.append(str(found["href"]).removeprefix("#"))
        self.legends += tag == "legend"
        self.fieldsets += tag == "fieldset"


# --- every member has its field -----------------------------------------------------------


@pytest.mark.parametrize("message_type", list(MessageType))
def test_every_member_of_the_published_schema_has_a_field_and_no_field_is_invented(
    message_type: MessageType,
) -> None:
    schema = published(message_type)
    expected = members(schema, schema.get("$defs", {}), ())
    assert {spec.path for spec in walk(form_spec(message_type))} == expected


@pytest.mark.parametrize("message_type", list(MessageType))
def test_every_field_is_rendered_with_a_label_or_legend(message_type: MessageType) -> None:
    specs = form_spec(message_type)
    page = Page(render(bind(specs)))
    # Each member's input, a repeat's first item standing for the rest.
    for spec in walk(specs):
        if spec.kind in ("group", "repeat"):
            continue
        name = ".".join(_first_items(specs, spec.path))
        assert name in page.names, f"{name} has no input"
    for input_id in page.inputs:
        assert input_id in page.labelled, f"{input_id} has no label"
    assert page.legends == page.fieldsets
    for found in page.inputs.values():
        for reference in (found.get("aria-describedby") or "").split():
            assert reference in page.ids


def _first_items(specs: tuple[FieldSpec, ...], path: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    current = specs
    for part in path:
        spec = next(s for s in current if s.member == part)
        names.append(part)
        if spec.kind == "repeat" and part != path[-1]:
            names.append("0")
        current = spec.children
    return names


def test_the_header_is_never_entered_and_its_facts_say_the_broker_sees_them() -> None:
    specs = form_spec(T.RETURN_PREPARATION)
    page = render(bind(specs))
    assert 'name="header' not in page
    planned = next(s for s in specs if s.member == "planned_arrival")
    assert planned.header == ("planned_arrival",)
    assert planned.kind == "datetime"
    assert planned.required
    assert "The broker sees this fact" in page


def test_every_text_of_a_form_goes_through_gettext() -> None:
    def loud(text: str) -> str:
        return f"«{text}»"

    for message_type in MessageType:
        for spec in walk(form_spec(message_type, gettext=loud, locale="fr")):
            assert spec.label.startswith("«"), spec.path
            assert spec.help is None or spec.help.startswith("«")
            if spec.member not in ("destination_country", "nationality"):
                assert all(choice.label.startswith("«") for choice in spec.choices)
    countries = next(s for s in form_spec(T.REFERRAL, locale="fr") if s.kind == "choice")
    assert ("AT", "Autriche") in {(c.value, c.label) for c in countries.choices}
    assert FormTexts.translated(loud).required == "«(required)»"


def test_kinds_follow_the_schema() -> None:
    kinds = {spec.path: spec.kind for spec in walk(form_spec(T.RETURN_PREPARATION))}
    assert kinds[("planned_arrival",)] == "datetime"
    assert kinds[("travel_date",)] == "date"
    assert kinds[("route",)] == "repeat"
    assert kinds[("route", "mode")] == "choice"
    assert kinds[("escort", "roles")] == "multichoice"
    assert kinds[("escort", "required")] == "boolean"
    assert kinds[("languages",)] == "lines"
    assert kinds[("notes",)] == "textarea"
    assert kinds[("contact_person",)] == "text"
    assert kinds[("guardian",)] == "group"
    assert list(walk(form_spec(T.RETURN_PREPARATION)))[-1].path == ("notes",)


# --- every valid payload comes back whole -------------------------------------------------


def normalised(message_type: MessageType, document: Any, specs: Any = None) -> Any:
    """What a form can say of ``document``: no empty parts or lists, a code once in a list,
    line breaks as a browser sends them back (CR LF read as LF)."""
    specs = form_spec(message_type) if specs is None else specs
    out: dict[str, Any] = {}
    for spec in specs:
        value = document.get(spec.member)
        if spec.kind == "group" and value is not None:
            value = normalised(message_type, value, spec.children) or None
        elif spec.kind == "repeat" and value:
            items = [normalised(message_type, item, spec.children) for item in value]
            value = [item for item in items if item] or None
        elif spec.kind == "multichoice" and value:
            value = list(dict.fromkeys(value))
        elif isinstance(value, str):
            value = value.replace("\r\n", "\n")
        if value not in (None, []):
            out[spec.member] = value
    return out


@pytest.mark.parametrize("message_type", list(MessageType))
@settings(max_examples=examples(40))
@given(data=st.data(), zone=st.sampled_from(ZONES))
def test_every_valid_payload_comes_back_from_its_form_data(
    message_type: MessageType, data: st.DataObject, zone: tzinfo
) -> None:
    model = PAYLOAD_MODELS[message_type]
    document = data.draw(payloads(message_type))
    original = model.model_validate_json(json.dumps(document), strict=True)
    submitted = form_values(message_type, original.model_dump(), zone)
    result = read_form(message_type, submitted, zone)
    assert result.errors == {}
    assert result.payload is not None
    expected = model.model_validate_json(json.dumps(normalised(message_type, document)))
    assert model.model_validate_json(json.dumps(result.payload), strict=True) == expected


@pytest.mark.parametrize("message_type", list(MessageType))
def test_a_full_payload_shown_in_a_form_is_its_values(message_type: MessageType) -> None:
    model = PAYLOAD_MODELS[message_type]
    original = model.model_validate_json(json.dumps(FULL[message_type]), strict=True)
    submitted = form_values(message_type, original.model_dump(), VIENNA)
    page = Page(render(bind(form_spec(message_type), grouped(submitted))))
    assert {name for name, _ in submitted} <= page.names
    result = read_form(message_type, submitted, VIENNA)
    assert result.errors == {}
    assert model.model_validate_json(json.dumps(result.payload), strict=True) == original


def test_a_time_is_entered_in_the_users_time_zone() -> None:
    submitted = [("receiving_org", "ng.shelter"), ("planned_arrival", "2026-07-01T10:30")]
    result = read_form(T.RETURN_PREPARATION, submitted, VIENNA)
    assert result.payload is not None
    assert result.payload["planned_arrival"] == "2026-07-01T10:30:00+02:00"  # summer time
    winter = read_form(
        T.RETURN_PREPARATION, [*submitted[:1], ("planned_arrival", "2026-01-01T10:30")], VIENNA
    )
    assert winter.payload is not None
    assert winter.payload["planned_arrival"].endswith("+01:00")


# --- errors land on their fields ----------------------------------------------------------


def minimal_form(message_type: MessageType) -> list[tuple[str, str]]:
    model = PAYLOAD_MODELS[message_type]
    payload = model.model_validate_json(json.dumps(MINIMAL[message_type]), strict=True)
    return form_values(message_type, payload.model_dump(), UTC)


@pytest.mark.parametrize("message_type", list(MessageType))
def test_an_empty_form_asks_for_each_required_member(message_type: MessageType) -> None:
    result = read_form(message_type, [("csrf_token", "x")], UTC)
    required = {spec.member for spec in form_spec(message_type) if spec.required}
    assert set(result.errors) == required
    assert all(m in ("Fill this in.", "Choose one of the options.") for m in result.errors.values())
    assert (result.payload is None) == bool(required)


CHOICES = [
    (message_type, spec.path)
    for message_type in MessageType
    for spec in walk(form_spec(message_type))
    if spec.kind == "choice"
]


@pytest.mark.parametrize(("message_type", "path"), CHOICES, ids=lambda p: str(p))
def test_a_code_not_offered_is_refused_on_its_own_field(
    message_type: MessageType, path: tuple[str, ...]
) -> None:
    name = ".".join(_first_items(form_spec(message_type), path))
    kept = [(n, v) for n, v in minimal_form(message_type) if n != name]
    result = read_form(message_type, [*kept, (name, "CANARY-not-a-code")], UTC)
    assert list(result.errors) == [name]
    assert result.errors[name] in ("Choose one of the options.", "Choose a country from the list.")
    assert "CANARY" not in result.errors[name]


@pytest.mark.parametrize(
    ("message_type", "form", "field", "words"),
    [
        (T.REFERRAL_RESPONSE, [("accepted", "yes"), ("decline_reason", "no_service_capacity")],
         "decline_reason", "only when the referral is not accepted"),
        (T.RECEPTION_PLAN_RESPONSE, [("readiness", "cannot_receive")],
         "cannot_receive_reason", "cannot receive the person"),
        (T.CASE_MONITORING, [("period_start", "2027-02-01"), ("period_end", "2027-01-01")],
         "period_end", "before its start"),
        (T.RECEPTION_CONFIRMATION,
         [("outcome", "received"), ("received_at", "2026-12-01T18:00"),
          ("reason_not_received", "did_not_travel")],
         "reason_not_received", "not received"),
    ],
)  # fmt: skip
def test_a_rule_across_members_is_shown_on_the_member_to_fix(
    message_type: MessageType, form: list[tuple[str, str]], field: str, words: str
) -> None:
    result = read_form(message_type, form, UTC)
    assert list(result.errors) == [field]
    assert words in result.errors[field]


def test_each_kind_of_mistake_is_explained_on_its_field_without_its_value() -> None:
    canary = "CANARY7Q2XJ"
    form = [
        ("receiving_org", f"{canary} shelter"),
        ("planned_arrival", f"{canary}"),
        ("travel_date", "2026-13-45"),
        ("route.1.mode", "air"),  # slot 0 left blank: slot 1 is the first leg
        ("route.1.reference", canary * 30),
        ("route.3.mode", "boat-" + canary),
        ("escort.required", "perhaps"),
        ("languages", f"en\r\n{canary}"),
        ("best_interests_determination.ref", f"{canary} Maria"),
    ]
    result = read_form(T.RETURN_PREPARATION, form, UTC)
    assert result.errors == {
        "planned_arrival": "Enter a date and a time.",
        "escort.required": "Choose yes or no.",
    }  # read before validation: the model is not asked until these are fixed
    form = [(n, v) for n, v in form if n not in result.errors]
    form += [("planned_arrival", "2026-12-01T17:05"), ("escort.required", "yes")]
    result = read_form(T.RETURN_PREPARATION, form, UTC)
    assert result.errors == {
        "receiving_org": "Use the organisation's participant id in the registry, such as"
        " ng.shelter.",
        "travel_date": "Enter a date.",
        "route.1.reference": "Too long: at most 200 characters.",
        "route.3.mode": "Choose one of the options.",
        "languages": "Item 2: Use language codes such as en, fr or pt-BR, one per line.",
        "best_interests_determination.ref": "Use letters, digits and . _ : - only, without"
        " spaces: a reference, never a name.",
    }
    assert result.payload is None
    bound = bind(form_spec(T.RETURN_PREPARATION), result.values, result.errors)
    page = Page(render(bound, result.errors))
    assert canary not in " ".join(result.errors.values())
    assert set(page.links) == {f"field-{name.replace('.', '-')}" for name in result.errors}
    assert set(page.links) <= page.ids
    for link in page.links:
        assert page.inputs[link].get("aria-invalid") == "true"
        assert f"{link}-error" in str(page.inputs[link]["aria-describedby"])


def test_a_list_of_codes_with_an_error_links_to_its_first_box() -> None:
    form = [*minimal_form(T.REFERRAL), ("means_of_control", "threats")]
    form += [("means_of_control", "not-a-code")]
    result = read_form(T.REFERRAL, form, UTC)
    assert result.errors == {"means_of_control": "Item 2: Choose one of the options."}
    page = Page(render(bind(form_spec(T.REFERRAL), result.values, result.errors), result.errors))
    assert page.links == ["field-means_of_control-0"]
    assert page.inputs["field-means_of_control-0"]["aria-invalid"] == "true"


def test_a_repeat_shows_its_items_and_a_blank_one_more() -> None:
    values = grouped([("route.0.mode", "air"), ("route.1.mode", "bus")])
    bound = bind(form_spec(T.RETURN_PREPARATION), values)
    route = next(field for field in bound if field.name == "route")
    assert [item.label for item in route.children] == ["Route 1", "Route 2", "Route 3"]
    assert route.children[1].children[0].value == "bus"
