"""The dependency audit of `make lint` (tools/audit_dependencies.py) judges pip-audit's report:
unwaived or expired-waiver vulnerabilities fail, and packages it could not look up are
reported as not audited, never as passed."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit", ROOT / "tools" / "audit_dependencies.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


audit = _load()
TODAY = date(2026, 12, 4)
VULNERABLE = {
    "dependencies": [
        {"name": "fastapi", "version": "0.165.0", "vulns": []},
        {
            "name": "Jinja2",
            "version": "3.0.0",
            "vulns": [{"id": "PYSEC-2024-1", "aliases": ["CVE-2024-22195"], "fix_versions": []}],
        },
    ],
    "fixes": [],
}


def test_an_unwaived_vulnerability_fails() -> None:
    verdict = audit.judge(VULNERABLE, [], TODAY)
    assert verdict.failures == ["jinja2 3.0.0: PYSEC-2024-1 (no waiver)"]
    assert verdict.audited == 2


def test_a_waiver_by_alias_covers_it_until_its_review_date() -> None:
    waivers = audit.parse_waivers(
        "# comment\nCVE-2024-22195 jinja2 2027-01-31 templates are never user-controlled\n"
    )
    assert audit.judge(VULNERABLE, waivers, TODAY).failures == []
    expired = audit.judge(VULNERABLE, waivers, date(2027, 2, 1)).failures
    assert expired == ["jinja2: waiver for PYSEC-2024-1 expired 2027-01-31"]


def test_a_waiver_for_another_package_does_not_cover_it() -> None:
    waivers = audit.parse_waivers("PYSEC-2024-1 fastapi 2027-01-31 wrong package\n")
    assert audit.judge(VULNERABLE, waivers, TODAY).failures


def test_packages_it_could_not_look_up_are_not_audited() -> None:
    report = {"dependencies": [{"name": "httpx", "skip_reason": "not found on PyPI"}]}
    verdict = audit.judge(report, [], TODAY)
    assert verdict == audit.Verdict(failures=[], not_audited=["httpx"], audited=0)


def test_a_malformed_waiver_is_refused() -> None:
    with pytest.raises(ValueError, match="waiver line 1"):
        audit.parse_waivers("PYSEC-1 jinja2\n")


def test_the_committed_waivers_parse() -> None:
    audit.parse_waivers((ROOT / "security" / "pip-audit-waivers.txt").read_text())
