"""What each setting allows, in words, and why a value was refused.

The same words serve the error at start (one line per bad setting, naming its environment
variable) and the generated docs/configuration.md, so the two cannot disagree.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from trm_broker.settings import InvalidSettings, Settings, get_settings

_UNITS = {"_seconds": "seconds", "_days": "days", "_bytes": "bytes"}
_PROBLEMS = {
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "int_type": "is not a whole number",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "bool_parsing": "is neither true nor false",
    "bool_type": "is neither true nor false",
    "literal_error": "is not one of the allowed values",
    "string_pattern_mismatch": "does not have the allowed form",
    "string_too_short": "is empty",
}


def env_names(name: str, field: FieldInfo) -> list[str]:
    """The environment variables that set a field: its name first, then any old names."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices if str(choice).startswith("TRM_")]
    if isinstance(alias, str):
        return [alias]
    return [f"TRM_{name.upper()}"]


def value_type(field: FieldInfo) -> Any:
    """The field's type without ``None`` and ``Annotated``."""
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else annotation
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def unit(name: str) -> str | None:
    return next((word for suffix, word in _UNITS.items() if name.endswith(suffix)), None)


def kind(name: str, field: FieldInfo) -> str:
    """The type in an operator's words."""
    of = value_type(field)
    if of is bool:
        return "boolean"
    if of is SecretStr:
        return "secret text"
    if of is Path:
        return "file path"
    if typing.get_origin(of) is list:
        return "comma-separated file paths"
    if typing.get_origin(of) is Literal:
        return "one word"
    if of in (int, float):
        word = unit(name)
        if word == "seconds":
            return "duration in seconds"
        if word is not None:
            return f"{'whole ' if of is int else ''}number of {word}"
        return "whole number" if of is int else "number"
    return "text"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def human_duration(seconds: float) -> str | None:
    """``2592000`` -> ``30 days``; None when seconds are the clearest way to say it."""
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            return _counted(int(seconds // size), word)
    return None


def _counted(count: float, word: str) -> str:
    return f"{_number(count)} {word if count == 1 else word + 's'}"


def _human_bytes(size: float) -> str | None:
    for scale, word in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if size >= scale and size % scale == 0:
            return f"{int(size // scale)} {word}"
    return None


def quantity(name: str, value: float) -> str:
    """A bound or default with its unit: ``86400 seconds (1 day)``."""
    word = unit(name)
    if word is None:
        return _number(value)
    text = _counted(value, word.removesuffix("s"))
    if word == "seconds":
        spoken = human_duration(value) if value >= 3600 else None
    else:
        spoken = _human_bytes(value) if word == "bytes" else None
    return f"{text} ({spoken})" if spoken else text


def allowed(name: str, field: FieldInfo) -> str:
    """What values a setting takes, e.g. ``more than 0, up to 300 seconds (5 minutes)``."""
    extra = field.json_schema_extra
    if isinstance(extra, Mapping) and "allowed" in extra:
        return str(extra["allowed"])
    of = value_type(field)
    if of is bool:
        return "true or false"
    if typing.get_origin(of) is Literal:
        words = [str(word) for word in typing.get_args(of)]
        return ", ".join(words[:-1]) + " or " + words[-1]
    bounds: dict[str, float] = {}
    for item in field.metadata:
        for key in ("gt", "ge", "lt", "le", "min_length"):
            if isinstance(item, annotated_types.BaseMetadata) and hasattr(item, key):
                bounds[key] = getattr(item, key)
    if "min_length" in bounds:
        return "not empty"
    low = next(((k, bounds[k]) for k in ("gt", "ge") if k in bounds), None)
    high = next(((k, bounds[k]) for k in ("lt", "le") if k in bounds), None)
    if low is None and high is None:
        return "any"
    if low is not None and high is not None:
        if low[0] == "ge" and high[0] == "le":
            return f"{_number(low[1])} to {quantity(name, high[1])}"
        opening = "more than" if low[0] == "gt" else "at least"
        closing = "below" if high[0] == "lt" else "up to"
        return f"{opening} {_number(low[1])}, {closing} {quantity(name, high[1])}"
    if low is not None:
        return ("more than " if low[0] == "gt" else "at least ") + quantity(name, low[1])
    kind_of_high, value = high or ("le", 0.0)
    return ("below " if kind_of_high == "lt" else "at most ") + quantity(name, value)


def _problem(name: str, error: ErrorDetails) -> str:
    if unit(name) == "seconds" and error["type"] in ("float_parsing", "int_parsing"):
        return "is neither a number of seconds nor an ISO 8601 duration (PT5M, P30D)"
    template = _PROBLEMS.get(error["type"])
    if template is None:
        return str(error["msg"]).removeprefix("Value error, ")
    context = {key: _number(value) for key, value in (error.get("ctx") or {}).items()}
    return template.format(**context)


def _shown(field: FieldInfo, value: object) -> str | None:
    """The refused value, for numbers, booleans and words only: a URL may hold a password."""
    of = value_type(field)
    if of not in (int, float, bool) and typing.get_origin(of) is not Literal:
        return None
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _set_variable(candidates: list[str], environ: Mapping[str, str]) -> tuple[str, str | None]:
    """Which of a setting's variables the environment set (the first wins, as in pydantic),
    and its value as written there."""
    present = {key.upper(): value for key, value in environ.items()}
    found = next((name for name in candidates if name in present), None)
    return (found, present[found]) if found else (candidates[0], None)


def explain(error: ValidationError, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per refused setting: its variable, what is wrong, what is allowed."""
    environ = os.environ if environ is None else environ
    fields = Settings.model_fields
    by_key: dict[str, str] = {}
    for field_name, field_info in fields.items():
        by_key[field_name] = field_name
        for variable in env_names(field_name, field_info):
            by_key[variable] = field_name
    lines: list[str] = []
    seen: set[str] = set()
    for detail in error.errors():
        key = str(detail["loc"][0]) if detail["loc"] else ""
        name = by_key.get(key)
        if name is None:
            lines.append(f"{key or 'settings'}: {detail['msg']}")
            continue
        if name in seen:
            continue  # one line per setting (a union type reports each member)
        seen.add(name)
        field = fields[name]
        variable, written = _set_variable(env_names(name, field), environ)
        shown = _shown(field, detail.get("input") if written is None else written)
        subject = f"{variable}={shown}" if shown is not None else variable
        lines.append(
            f"{subject} is refused: it {_problem(name, detail)} (allowed: {allowed(name, field)})"
        )
    return lines


def settings_or_exit() -> Settings:
    """The settings from the environment, or exit 2 with one line per refused setting (the
    CLI's commands start with this, so a bad value never shows as a traceback)."""
    import typer

    try:
        return get_settings()
    except InvalidSettings as exc:
        for line in exc.problems:
            typer.echo(f"trm-broker: {line}", err=True)
        typer.echo(
            "trm-broker: refusing to start; docs/configuration.md lists every setting.", err=True
        )
        raise typer.Exit(2) from None


def settings_table(names: Iterable[str] | None = None) -> list[dict[str, str]]:
    """Every setting's variable, old names, type, default, allowed values and meaning."""
    fields = Settings.model_fields
    rows = []
    for name in names or fields:
        field = fields[name]
        variables = env_names(name, field)
        rows.append(
            {
                "variable": variables[0],
                "old_names": ", ".join(variables[1:]),
                "type": kind(name, field),
                "default": _default(name, field),
                "allowed": allowed(name, field),
                "description": field.description or "",
            }
        )
    return rows


def _default(name: str, field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None or default == []:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (int, float)):
        return quantity(name, default)
    if isinstance(default, Path) and not default.is_absolute():
        return f"./{default}"
    return str(default)
