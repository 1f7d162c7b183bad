"""Forms generated from the payload schemas (issue 19), so a schema change never leaves a
form behind.

A message type's payload schema (the one published in ``contracts/schemas/payloads/``, made
from :data:`~trm_broker.domain.payloads.PAYLOAD_MODELS`) becomes a tree of
:class:`FieldSpec`: a label and help text from the member's title and description (through
gettext), enumerations as choices, required marks, nested objects as groups, lists of codes
as check boxes, lists of texts one per line, lists of objects as repeated groups, dates and
date-times as such. A submitted form becomes the payload's JSON again and is validated by
the same pydantic model, strictly, as the receiving node checks it (:func:`read_form`); each
validation error is mapped to the field it is about, in a case worker's words.

The clear header is never entered: the node computes it from the payload
(``trm_broker.domain.projections``); a field the header is computed from says so
(:attr:`FieldSpec.header`). Names in the form are the members' paths joined with dots
(``person.given_name``, ``route.0.mode``); any other name (the CSRF token) is ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal

from babel import Locale
from pydantic import ValidationError

from trm_broker.domain.countries import COUNTRY_CODES
from trm_broker.domain.messages import MessageType
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN
from trm_broker.domain.payloads import CATEGORY_KEY, HEADER_KEY, PAYLOAD_MODELS
from trm_broker.node.web.i18n import N_

Translate = Callable[[str], str]
Kind = Literal[
    "text",
    "textarea",
    "date",
    "datetime",
    "boolean",
    "choice",
    "multichoice",
    "lines",
    "group",
    "repeat",
]
#: The pattern of a country code (ISO 3166-1 alpha-2): offered as a list of countries.
COUNTRY_PATTERN = "^[A-Z]{2}$"
YES, NO = "yes", "no"


def _untranslated(text: str) -> str:
    return text


class UnsupportedSchema(Exception):
    """A payload member no form input is made for: the forms must learn it."""


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class FieldSpec:
    """One payload member as a form field (a group or repeat holds its members' fields)."""

    path: tuple[str, ...]
    kind: Kind
    label: str
    help: str | None
    required: bool
    choices: tuple[Choice, ...] = ()
    children: tuple[FieldSpec, ...] = ()
    max_items: int | None = None
    max_length: int | None = None
    #: The clear-header fields the node computes from this member (the broker sees them).
    header: tuple[str, ...] = ()
    category: str | None = None

    @property
    def member(self) -> str:
        return self.path[-1]


# --- the schema, as fields ----------------------------------------------------------------


def payload_schema(message_type: MessageType) -> dict[str, Any]:
    """The payload's JSON Schema, as ``contracts/`` publishes it."""
    return PAYLOAD_MODELS[message_type].model_json_schema()


def form_spec(
    message_type: MessageType, gettext: Translate = _untranslated, locale: str = "en"
) -> tuple[FieldSpec, ...]:
    """The fields of ``message_type``'s form, in the schema's order, texts translated."""
    schema = payload_schema(message_type)
    specs = _Builder(schema, gettext, locale).members(schema, ())
    # Every payload's free-text notes (first in the schema, from its base) come last.
    return tuple(sorted(specs, key=lambda spec: spec.path == ("notes",)))


@dataclass
class _Builder:
    schema: dict[str, Any]
    gettext: Translate
    locale: str

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """The node with its ``$ref`` followed and ``anyOf [X, null]`` made X (the
        member's own title and description kept over the referenced one's)."""
        node = dict(node)
        if "anyOf" in node:
            options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
            if len(options) != 1:
                raise UnsupportedSchema("a choice between schemas")
            node = {**options[0], **node}
        if "$ref" in node:
            name = node.pop("$ref").removeprefix("#/$defs/")
            target = self.resolve(self.schema["$defs"][name])
            own = {k: v for k, v in node.items() if k in ("title", "description")}
            node = {**target, **{k: v for k, v in node.items() if k not in own}}
            node.pop("title", None)  # the type's name (``Person``) is no member's label
            node.pop("description", None)  # nor its doc the member's help
            node.update(own)
        return node

    def members(self, node: dict[str, Any], path: tuple[str, ...]) -> tuple[FieldSpec, ...]:
        required = set(node.get("required", []))
        return tuple(
            self.member(name, sub, (*path, name), name in required)
            for name, sub in node["properties"].items()
        )

    def member(
        self, name: str, raw: dict[str, Any], path: tuple[str, ...], required: bool
    ) -> FieldSpec:
        node = self.resolve(raw)
        title = node.get("title")
        label = title if title and title != name.replace("_", " ").title() else _label(name)
        description = node.get("description")
        common: dict[str, Any] = {
            "path": path,
            "label": self.gettext(label),
            "help": self.gettext(description) if description else None,
            "required": required,
            "header": tuple(raw.get(HEADER_KEY, ())),
            "category": raw.get(CATEGORY_KEY),
        }
        kind = node.get("type")
        if "enum" in node:
            return FieldSpec(kind="choice", choices=self.choices(node), **common)
        if kind == "string":
            if node.get("pattern") == COUNTRY_PATTERN:
                return FieldSpec(kind="choice", choices=self.countries(), **common)
            if node.get("format") == "date":
                return FieldSpec(kind="date", **common)
            if node.get("format") == "date-time":
                return FieldSpec(kind="datetime", **common)
            length = node.get("maxLength")
            textarea = length is not None and length > 200
            return FieldSpec(kind="textarea" if textarea else "text", max_length=length, **common)
        if kind == "boolean":
            yes_no = (Choice(YES, self.gettext("Yes")), Choice(NO, self.gettext("No")))
            return FieldSpec(kind="boolean", choices=yes_no, **common)
        if kind == "object" and "properties" in node:
            return FieldSpec(kind="group", children=self.members(node, path), **common)
        if kind == "array":
            items = self.resolve(node["items"])
            most = node.get("maxItems")
            if "enum" in items:
                return FieldSpec(
                    kind="multichoice", choices=self.choices(items), max_items=most, **common
                )
            if items.get("type") == "string" and "format" not in items:
                return FieldSpec(kind="lines", max_items=most, **common)
            if items.get("type") == "object" and "properties" in items:
                children = self.members(items, path)
                return FieldSpec(kind="repeat", children=children, max_items=most, **common)
        raise UnsupportedSchema(f"{'.'.join(path)}: no form input for this member's schema")

    def choices(self, node: dict[str, Any]) -> tuple[Choice, ...]:
        return tuple(Choice(str(v), self.gettext(_label(str(v)))) for v in node["enum"])

    def countries(self) -> tuple[Choice, ...]:
        names = Locale.parse(self.locale).territories
        found = [Choice(code, names.get(code, code)) for code in COUNTRY_CODES]
        return tuple(sorted(found, key=lambda c: c.label))


def _label(name: str) -> str:
    """``re_trafficking_risk`` as ``Re trafficking risk``."""
    return name.replace("_", " ").capitalize()


def walk(specs: Iterable[FieldSpec]) -> Iterable[FieldSpec]:
    """Every field, groups and repeats before their members."""
    for spec in specs:
        yield spec
        yield from walk(spec.children)


def schema_messages(locale: str = "en") -> set[str]:
    """Every text the forms translate (labels, help texts, choices): for the catalogs."""
    texts: set[str] = {"Yes", "No"}
    for message_type in PAYLOAD_MODELS:
        for spec in walk(form_spec(message_type, locale=locale)):
            texts.add(spec.label)
            texts.update(t for t in [spec.help] if t)
            if spec.path[-1:] != ("nationality",) and spec.path[-1:] != ("destination_country",):
                texts.update(c.label for c in spec.choices if c.value not in COUNTRY_CODES)
    return texts


@dataclass(frozen=True)
class ContentWords:
    """A received payload's members and codes in the reader's words, by member path
    (``person.given_name``; a list's items share their list's path)."""

    labels: dict[str, str]
    choices: dict[str, dict[str, str]]
    #: The members that are dates or date-times (``date``, ``datetime``), by path: shown in
    #: the reader's conventions and time zone.
    kinds: Mapping[str, str] = field(default_factory=dict)

    def kind(self, path: str) -> str:
        return self.kinds.get(path, "")

    def label(self, path: str, member: str) -> str:
        return self.labels.get(path) or _label(member)

    def value(self, path: str, value: object) -> str:
        return self.choices.get(path, {}).get(str(value), str(value))


def content_words(
    message_type: MessageType, gettext: Translate = _untranslated, locale: str = "en"
) -> ContentWords:
    """How a message of ``message_type`` reads: its form's labels and choices."""
    if message_type not in PAYLOAD_MODELS:
        return ContentWords({}, {})
    specs = list(walk(form_spec(message_type, gettext, locale)))
    labels = {".".join(spec.path): spec.label for spec in specs}
    choices = {
        ".".join(spec.path): {c.value: c.label for c in spec.choices}
        for spec in specs
        if spec.choices
    }
    kinds = {".".join(spec.path): spec.kind for spec in specs if spec.kind in ("date", "datetime")}
    return ContentWords(labels, choices, kinds)


# --- a payload as form data, and form data as a payload ---------------------------------

FormData = list[tuple[str, str]]


def form_values(message_type: MessageType, payload: Mapping[str, Any], zone: tzinfo) -> FormData:
    """The form data a browser submits for ``payload`` (a payload model's ``model_dump()``),
    date-times shown in ``zone``, the user's time zone."""
    data: FormData = []
    _values(form_spec(message_type), payload, "", zone, data)
    return data


def _values(
    specs: Sequence[FieldSpec], values: Mapping[str, Any], prefix: str, zone: tzinfo, out: FormData
) -> None:
    for spec in specs:
        value = values.get(spec.member)
        name = prefix + spec.member
        if value is None or value == []:
            continue
        if spec.kind == "group":
            _values(spec.children, value, name + ".", zone, out)
        elif spec.kind == "repeat":
            for index, item in enumerate(value):
                _values(spec.children, item, f"{name}.{index}.", zone, out)
        elif spec.kind == "multichoice":
            out.extend((name, str(v)) for v in value)
        elif spec.kind == "lines":
            out.append((name, "\n".join(value)))
        elif spec.kind == "boolean":
            out.append((name, YES if value else NO))
        elif spec.kind == "date":
            out.append((name, value.isoformat()))
        elif spec.kind == "datetime":
            out.append((name, local_time(value, zone)))
        else:
            out.append((name, str(value)))


def local_time(moment: datetime, zone: tzinfo) -> str:
    """A moment as an ``<input type="datetime-local">`` value in ``zone``."""
    try:
        local = moment.astimezone(zone).replace(tzinfo=None)
    except OverflowError:  # near year 1 or 9999: shown with its offset, read back as such
        return moment.isoformat()
    return local.isoformat(timespec="seconds" if not local.microsecond else "microseconds")


@dataclass
class FormResult:
    """A submitted form read: the payload (None when there are errors) and, by field name,
    what to fix; ``values`` is the submission, to show the form again as it was."""

    payload: dict[str, Any] | None
    errors: dict[str, str]
    values: dict[str, list[str]] = field(default_factory=dict)


def read_form(
    message_type: MessageType,
    submitted: Iterable[tuple[str, str]],
    zone: tzinfo,
    gettext: Translate = _untranslated,
) -> FormResult:
    """The payload a submitted form gives, validated as the receiving node validates it."""
    values = grouped(submitted)
    specs = form_spec(message_type)
    reader = _Reader(values, zone, gettext)
    data = reader.members(specs, "")
    if reader.errors:
        return FormResult(None, reader.errors, values)
    model = PAYLOAD_MODELS[message_type]
    try:
        model.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors(include_input=False):
            name, message = _placed(specs, reader.slots, error, gettext)
            errors.setdefault(name, message)
        return FormResult(None, errors, values)
    return FormResult(data, {}, values)


@dataclass
class _Reader:
    values: Mapping[str, list[str]]
    zone: tzinfo
    gettext: Translate
    errors: dict[str, str] = field(default_factory=dict)
    #: For each repeat's name, the form's slot of each item kept (blank slots are dropped).
    slots: dict[str, list[int]] = field(default_factory=dict)

    def one(self, name: str) -> str:
        return (self.values.get(name) or [""])[0].replace("\r\n", "\n")

    def members(self, specs: Sequence[FieldSpec], prefix: str) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for spec in specs:
            value = self.member(spec, prefix + spec.member)
            if value is not None:
                data[spec.member] = value
        return data

    def member(self, spec: FieldSpec, name: str) -> Any:
        if spec.kind == "group":
            return self.members(spec.children, name + ".") or None
        if spec.kind == "repeat":
            return self.repeat(spec, name)
        if spec.kind == "multichoice":
            return list(dict.fromkeys(v for v in self.values.get(name, []) if v)) or None
        text = self.one(name)
        if text == "":
            return None
        if spec.kind == "lines":
            return [line.strip() for line in text.split("\n") if line.strip()] or None
        if spec.kind == "boolean":
            if text not in (YES, NO):
                self.errors[name] = self.gettext("Choose yes or no.")
            return text == YES
        if spec.kind == "datetime":
            return self.moment(name, text)
        return text

    def moment(self, name: str, text: str) -> str | None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.errors[name] = self.gettext("Enter a date and a time.")
            return None
        if moment.tzinfo is None:  # as the browser sends it: in the user's time zone
            moment = moment.replace(tzinfo=self.zone)
        try:
            return moment.isoformat()
        except (OverflowError, ValueError):
            self.errors[name] = self.gettext("Enter a date between the years 1 and 9999.")
            return None

    def repeat(self, spec: FieldSpec, name: str) -> list[dict[str, Any]] | None:
        pattern = re.compile(re.escape(name) + r"\.(\d+)\.")
        slots = sorted({int(m.group(1)) for key in self.values if (m := pattern.match(key))})
        items, kept = [], []
        for slot in slots:
            item = self.members(spec.children, f"{name}.{slot}.")
            if item:
                items.append(item)
                kept.append(slot)
        self.slots[name] = kept
        return items or None


# --- validation errors, in a case worker's words ------------------------------------------

#: Our own validators' sentences (trm_broker.domain.payloads), each naming its member first.
_RULES = {
    "decline_reason is only for a referral not accepted": N_(
        "Give a reason only when the referral is not accepted."
    ),
    "reason_not_received is only for a person not received": N_(
        "Give a reason only when the person was not received."
    ),
    "period_end is before period_start": N_("The end of the period is before its start."),
    "cannot_receive_reason is given exactly when readiness is cannot_receive": N_(
        "Give a reason when, and only when, the organisation cannot receive the person."
    ),
    "not an ISO 3166-1 alpha-2 country code": N_("Choose a country from the list."),
    "expected an RFC 3339 date-time with a time offset": N_("Enter a date and a time."),
    "not a valid date-time": N_("Enter a date and a time."),
    "the time is out of range in UTC (years 1 to 9999)": N_(
        "Enter a date between the years 1 and 9999."
    ),
}
_PATTERNS = {
    r"^[A-Za-z0-9._:-]{1,128}$": N_(
        "Use letters, digits and . _ : - only, without spaces: a reference, never a name."
    ),
    r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$": N_(
        "Use language codes such as en, fr or pt-BR, one per line."
    ),
    COUNTRY_PATTERN: N_("Choose a country from the list."),
    PARTICIPANT_ID_PATTERN: N_(
        "Use the organisation's participant id in the registry, such as ng.shelter."
    ),
}
_KINDS = {
    "missing": N_("Fill this in."),
    "enum": N_("Choose one of the options."),
    "string_too_short": N_("Fill this in."),
    "bool_type": N_("Choose yes or no."),
    "date_type": N_("Enter a date."),
    "date_parsing": N_("Enter a date."),
    "date_from_datetime_parsing": N_("Enter a date."),
    "date_from_datetime_inexact": N_("Enter a date."),
    "datetime_type": N_("Enter a date and a time."),
    "datetime_parsing": N_("Enter a date and a time."),
    "datetime_from_date_parsing": N_("Enter a date and a time."),
    "timezone_aware": N_("Enter a date and a time."),
}


def _message(error: Any, gettext: Translate) -> str:
    kind = str(error["type"])
    context = error.get("ctx", {})
    if kind == "value_error":
        text = str(context.get("error", ""))
        return gettext(_RULES.get(text, N_("This is not valid.")))
    if kind == "string_too_long":
        return gettext("Too long: at most {count} characters.").format(
            count=context.get("max_length")
        )
    if kind == "too_long":
        return gettext("Too many: at most {count}.").format(count=context.get("max_length"))
    if kind == "string_pattern_mismatch":
        pattern = str(context.get("pattern", ""))
        return gettext(_PATTERNS.get(pattern, N_("This is not in the expected format.")))
    return gettext(_KINDS.get(kind, N_("This is not valid.")))


def _placed(
    specs: Sequence[FieldSpec], slots: Mapping[str, list[int]], error: Any, gettext: Translate
) -> tuple[str, str]:
    """The field an error is about (its form name; "" for the form as a whole) and what
    the case worker is to do."""
    message = _message(error, gettext)
    location = list(error["loc"])
    if error["type"] == "value_error" and (not location or _is_group(specs, location)):
        # A rule over several members names the one to fix first ("period_end is ...").
        first = str(error.get("ctx", {}).get("error", "")).split(" ", 1)[0]
        location = [*location, first]
    names: list[str] = []
    current: Sequence[FieldSpec] = specs
    at = 0
    while at < len(location):
        spec = next((s for s in current if s.member == location[at]), None)
        if spec is None:
            break
        names.append(spec.member)
        after = location[at + 1] if at + 1 < len(location) else None
        if spec.kind in ("multichoice", "lines"):
            if isinstance(after, int):  # one item of the list: the list's field, and which
                item = gettext("Item {number}: {message}")
                message = item.format(number=after + 1, message=message)
            break
        if spec.kind == "repeat" and isinstance(after, int):
            kept = slots.get(".".join(names), [])
            names.append(str(kept[after] if after < len(kept) else after))
            at += 1
        current = spec.children
        at += 1
    return ".".join(names), message


def _is_group(specs: Sequence[FieldSpec], location: Sequence[Any]) -> bool:
    current: Sequence[FieldSpec] = specs
    spec: FieldSpec | None = None
    for part in location:
        if isinstance(part, int):
            continue
        spec = next((s for s in current if s.member == part), None)
        if spec is None:
            return False
        current = spec.children
    return spec is not None and spec.kind in ("group", "repeat")


# --- fields bound to values and errors, for the template ---------------------------------


@dataclass(frozen=True)
class FormTexts:
    """The form's own words, translated (the template holds no text of its own)."""

    required: str
    blank: str
    one_per_line: str
    header_note: str
    errors_title: str

    @classmethod
    def translated(cls, gettext: Translate = _untranslated) -> FormTexts:
        return cls(
            required=gettext("(required)"),
            blank=gettext("Not stated"),
            one_per_line=gettext("One per line."),
            header_note=gettext("The broker sees this fact: it is in the message's header."),
            errors_title=gettext("There is a problem"),
        )


@dataclass(frozen=True)
class BoundField:
    """A field as a page shows it: its input's name and id, value, error, members."""

    spec: FieldSpec
    name: str
    label: str
    help: str | None
    note: str | None
    value: str = ""
    values: tuple[str, ...] = ()
    error: str | None = None
    children: tuple[BoundField, ...] = ()
    #: "item" for one of a repeat's groups; the spec's kind otherwise.
    kind: str = ""

    @property
    def id(self) -> str:
        return "field-" + self.name.replace(".", "-")

    @property
    def describedby(self) -> str:
        ids = [self.id + "-help"] if self.help or self.note else []
        ids += [self.id + "-error"] if self.error else []
        return " ".join(ids)

    @property
    def target(self) -> str:
        """The id an error summary links to: the field's input, or its first choice."""
        return self.id + "-0" if self.kind == "multichoice" else self.id

    @property
    def input_type(self) -> str:
        return {"date": "date", "datetime": "datetime-local"}.get(self.kind, "text")


@dataclass(frozen=True)
class ErrorItem:
    target: str | None
    label: str
    message: str


def bind(
    specs: Sequence[FieldSpec],
    values: Mapping[str, Sequence[str]] | None = None,
    errors: Mapping[str, str] | None = None,
    texts: FormTexts | None = None,
    spare: int = 1,
) -> tuple[BoundField, ...]:
    """The fields with the values and errors of a submission (or of :func:`form_values`,
    grouped by name); each repeat shows its items and ``spare`` blank ones more."""
    return _bind(specs, values or {}, errors or {}, texts or FormTexts.translated(), "", spare)


def _bind(
    specs: Sequence[FieldSpec],
    values: Mapping[str, Sequence[str]],
    errors: Mapping[str, str],
    texts: FormTexts,
    prefix: str,
    spare: int,
) -> tuple[BoundField, ...]:
    bound = []
    for spec in specs:
        name = prefix + spec.member
        note = texts.header_note if spec.header else None
        help = spec.help
        if spec.kind == "lines":
            help = f"{help} {texts.one_per_line}" if help else texts.one_per_line
        common: dict[str, Any] = {
            "spec": spec,
            "name": name,
            "label": spec.label,
            "help": help,
            "note": note,
            "error": errors.get(name),
            "kind": spec.kind,
        }
        if spec.kind == "group":
            children = _bind(spec.children, values, errors, texts, name + ".", spare)
            bound.append(BoundField(children=children, **common))
        elif spec.kind == "repeat":
            pattern = re.compile(re.escape(name) + r"\.(\d+)\.")
            used = [int(m.group(1)) for key in values if (m := pattern.match(key))]
            count = min(max(used, default=-1) + 1 + spare, spec.max_items or 10)
            items = tuple(
                BoundField(
                    spec=spec,
                    name=f"{name}.{slot}",
                    label=f"{spec.label} {slot + 1}",
                    help=None,
                    note=None,
                    kind="item",
                    error=errors.get(f"{name}.{slot}"),
                    children=_bind(spec.children, values, errors, texts, f"{name}.{slot}.", 1),
                )
                for slot in range(count)
            )
            bound.append(BoundField(children=items, **common))
        else:
            given = tuple(values.get(name, ()))
            bound.append(BoundField(value=given[0] if given else "", values=given, **common))
    return tuple(bound)


def error_summary(bound: Sequence[BoundField], errors: Mapping[str, str]) -> list[ErrorItem]:
    """Every error in the form's order, each linking to its field; one no field holds (a
    rule over the whole form) first, unlinked."""
    placed = [ErrorItem(one.target, one.label, one.error) for one in _all(bound) if one.error]
    shown = {one.name for one in _all(bound) if one.error}
    loose = [ErrorItem(None, "", message) for name, message in errors.items() if name not in shown]
    return loose + placed


def _all(bound: Sequence[BoundField]) -> Iterable[BoundField]:
    for one in bound:
        yield one
        yield from _all(one.children)


def grouped(data: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Form data (name, value pairs) as values by name."""
    values: dict[str, list[str]] = {}
    for name, value in data:
        values.setdefault(name, []).append(value)
    return values
