"""Every setting is bounded, and a bad value stops the process at start with one line per
refused setting that names its environment variable and what it allows."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from trm_broker.cli import app
from trm_broker.settings import InvalidSettings, Settings, get_settings
from trm_broker.settings_explained import allowed, env_names, explain


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any TRM_ variable, to set some in a test."""
    for name in list(os.environ):
        if name.upper().startswith("TRM_"):
            monkeypatch.delenv(name)
    return monkeypatch


def refusals(environ: pytest.MonkeyPatch, **variables: str) -> list[str]:
    """The lines the settings' check writes for these environment variables."""
    for name, value in variables.items():
        environ.setenv(name, value)
    try:
        Settings()
    except ValidationError as exc:
        return explain(exc)
    return []


@pytest.mark.parametrize(
    ("variable", "value", "problem", "allowed_text"),
    [
        # gt=0: a zero or negative timeout, backoff or age
        ("TRM_DELIVERY_TIMEOUT_SECONDS", "-1", "must be more than 0", "more than 0, up to 300"),
        ("TRM_DELIVERY_BACKOFF_MAX_SECONDS", "0", "must be more than 0", "more than 0"),
        # ge with a floor above 0: a poll interval of 0 would spin
        ("TRM_DELIVERY_POLL_SECONDS", "0", "must be at least 0.01", "0.01 to 300 seconds"),
        ("TRM_CLOCK_SKEW_SECONDS", "-5", "must be at least 1", "1 to 3600 seconds (1 hour)"),
        # le: ceilings
        ("TRM_INBOX_MAX_WAIT_SECONDS", "301", "must be at most 300", "0 to 300 seconds"),
        ("TRM_MAX_JSON_DEPTH", "1000", "must be at most 256", "4 to 256"),
        # ports
        ("TRM_PORT", "0", "must be at least 1", "1 to 65535"),
        ("TRM_NODE_PORT", "65536", "must be at most 65535", "1 to 65535"),
        ("TRM_WORKER_PORT", "-1", "must be at least 1", "1 to 65535"),
        # not a number at all, not finite, not whole
        ("TRM_ALERT_CHECK_SECONDS", "soon", "neither a number of seconds nor an ISO", "more"),
        ("TRM_HEADER_TIMEOUT_SECONDS", "inf", "is not a finite number", "more than 0"),
        ("TRM_RATE_BURST", "2.5", "is not a whole number", "1 to 1000000"),
        # booleans, words, forms
        ("TRM_RUN_DISPATCHER", "perhaps", "neither true nor false", "true or false"),
        ("TRM_LOG_LEVEL", "loud", "not one of the allowed values", "debug, info, warning or"),
        ("TRM_NODE_BROKER_URL", "broker:8400", "does not have the allowed form", "an http://"),
        ("TRM_DATABASE_URL", "mysql://db", "does not have the allowed form", "a sqlite+"),
        ("TRM_HOST", "", "is empty", "not empty"),
    ],
)
def test_each_kind_of_bound_refuses_with_the_variable_the_problem_and_the_range(
    environ: pytest.MonkeyPatch, variable: str, value: str, problem: str, allowed_text: str
) -> None:
    [line] = refusals(environ, **{variable: value})
    assert line.startswith(f"{variable}"), line
    assert problem in line
    assert f"(allowed: {allowed_text}" in line


def test_zero_is_accepted_where_it_means_off(environ: pytest.MonkeyPatch) -> None:
    assert refusals(environ, TRM_RATE_PER_SECOND="0", TRM_INBOX_MAX_WAIT_SECONDS="0") == []
    assert refusals(environ, TRM_RETENTION_SECONDS="0", TRM_MIN_NOTICE_SECONDS="0") == []


def test_every_bad_setting_gets_its_own_line(environ: pytest.MonkeyPatch) -> None:
    lines = refusals(environ, TRM_PORT="0", TRM_CLOCK_SKEW_SECONDS="-1", TRM_LOG_LEVEL="x")
    assert sorted(line.split("=", 1)[0] for line in lines) == [
        "TRM_CLOCK_SKEW_SECONDS",
        "TRM_LOG_LEVEL",
        "TRM_PORT",
    ]


def test_a_refused_url_or_secret_is_never_repeated(environ: pytest.MonkeyPatch) -> None:
    [line] = refusals(environ, TRM_DATABASE_URL="mysql://trm:hunter2@db/trm")
    assert "hunter2" not in line
    assert line.startswith("TRM_DATABASE_URL is refused")


def test_every_setting_is_bounded_and_described() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        if field.annotation in (int, float):
            assert allowed(name, field).split()[0] != "any", f"{name} has no bounds"
        if name.endswith("_seconds") and field.annotation is float:
            assert any(getattr(item, "allow_inf_nan", True) is False for item in field.metadata)


def test_durations_are_seconds_or_iso_8601(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("TRM_CLOCK_SKEW_SECONDS", "PT2M")
    environ.setenv("TRM_DELIVERY_MAX_AGE_SECONDS", "P1D")
    settings = Settings()
    assert settings.clock_skew_seconds == 120
    assert settings.delivery_max_age_seconds == 86400


@pytest.mark.parametrize(
    ("old", "value", "attribute", "expected"),
    [
        ("TRM_RISK_MAX_AGE", "P14D", "risk_max_age", timedelta(days=14)),
        ("TRM_MIN_NOTICE", "PT1H", "min_notice", timedelta(hours=1)),
        ("TRM_RECEPTION_GRACE", "7200", "reception_grace", timedelta(hours=2)),
        ("TRM_MONITORING_PERIOD", "P200D", "monitoring_period", timedelta(days=200)),
        ("TRM_MONITORING_INTERVAL", "P30D", "monitoring_interval", timedelta(days=30)),
    ],
)
def test_the_renamed_durations_still_read_their_old_names(
    environ: pytest.MonkeyPatch,
    old: str,
    value: str,
    attribute: str,
    expected: timedelta,
) -> None:
    environ.setenv(old, value)
    assert getattr(Settings(), attribute) == expected
    name = f"{attribute}_seconds"
    assert env_names(name, Settings.model_fields[name]) == [f"TRM_{name.upper()}", old]
    # the new name wins when both are set
    environ.setenv(f"{old}_SECONDS", "60")
    assert getattr(Settings(), attribute) == timedelta(seconds=60)
    # and a bad old value is named by its old name
    environ.delenv(f"{old}_SECONDS")
    environ.setenv(old, "-P1D")
    get_settings.cache_clear()
    with pytest.raises(InvalidSettings) as refused:
        get_settings()
    assert [line.split("=", 1)[0] for line in refused.value.problems] == [old]


def test_tests_and_code_may_still_pass_settings_by_field_name() -> None:
    assert Settings(min_notice_seconds=60).min_notice == timedelta(minutes=1)


def test_serve_with_a_bad_value_exits_with_one_line_per_setting_and_no_traceback(
    tmp_path: Path,
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("TRM_")}
    env |= {
        "TRM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}",
        "TRM_BROKER_KEY_FILE": str(tmp_path / "broker-key.json"),
        "TRM_CLOCK_SKEW_SECONDS": "-5",
        "TRM_DELIVERY_POLL_SECONDS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "trm_broker.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert any(line.startswith("trm-broker: TRM_CLOCK_SKEW_SECONDS=-5 ") for line in lines)
    assert any(line.startswith("trm-broker: TRM_DELIVERY_POLL_SECONDS=0 ") for line in lines)
    assert len(lines) == 3  # one per setting, and where to read about them
    assert not (tmp_path / "broker.db").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("argv", "variable", "value"),
    [
        (["node", "serve"], "TRM_NODE_PULL_WAIT_SECONDS", "-1"),
        (["worker"], "TRM_DELIVERY_BACKOFF_MAX_SECONDS", "0"),
        (["db", "upgrade"], "TRM_DATABASE_URL", "mysql://db"),
        (["contract", "write"], "TRM_MAX_JSON_DEPTH", "1"),
    ],
)
def test_every_command_refuses_a_bad_value_the_same_way(
    environ: pytest.MonkeyPatch, argv: list[str], variable: str, value: str
) -> None:
    get_settings.cache_clear()
    environ.setenv(variable, value)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith(f"trm-broker: {variable}")
