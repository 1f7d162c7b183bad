"""The dependency audit of `make lint`: pip-audit over the project's environment, with waivers.

Fails on any known vulnerability that no waiver in ``security/pip-audit-waivers.txt`` covers
(one per line: ``<vulnerability id> <package> <review-by YYYY-MM-DD> <reason…>``; an expired
waiver fails too). When the vulnerability database cannot be reached (no network, or a
package index that is a mirror without the JSON API) the audit did NOT run: it says so
plainly and fails, unless ``TRM_AUDIT_OFFLINE=warn``, which prints the same warning and
exits 0. It never reports a pass it did not check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

WAIVERS = Path(__file__).resolve().parent.parent / "security" / "pip-audit-waivers.txt"


@dataclass(frozen=True)
class Waiver:
    vulnerability: str
    package: str
    review_by: date
    reason: str


@dataclass(frozen=True)
class Verdict:
    failures: list[str]
    not_audited: list[str]
    audited: int


def parse_waivers(text: str) -> list[Waiver]:
    waivers = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=3)
        if len(parts) < 4:
            raise ValueError(f"waiver line {number}: want '<id> <package> <review-by> <reason>'")
        vulnerability, package, review_by, reason = parts
        waivers.append(
            Waiver(vulnerability, package.lower(), date.fromisoformat(review_by), reason)
        )
    return waivers


def judge(report: dict[str, object], waivers: list[Waiver], today: date) -> Verdict:
    """What pip-audit's JSON report (``-f json``) means under the waivers."""
    failures: list[str] = []
    not_audited: list[str] = []
    audited = 0
    dependencies = report.get("dependencies", [])
    if not isinstance(dependencies, list):
        raise ValueError("not a pip-audit JSON report: 'dependencies' is not a list")
    for dependency in dependencies:
        name = str(dependency["name"]).lower()
        if "skip_reason" in dependency:
            not_audited.append(name)
            continue
        audited += 1
        for vuln in dependency.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            waiver = next(
                (w for w in waivers if w.package == name and w.vulnerability in ids), None
            )
            if waiver is None:
                failures.append(f"{name} {dependency.get('version')}: {vuln['id']} (no waiver)")
            elif waiver.review_by < today:
                failures.append(f"{name}: waiver for {vuln['id']} expired {waiver.review_by}")
    return Verdict(failures, not_audited, audited)


def main() -> int:
    waivers = parse_waivers(WAIVERS.read_text()) if WAIVERS.exists() else []
    run = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-f", "json", "--progress-spinner", "off"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        report = None
    if report is None:
        return _not_run(f"pip-audit gave no report (exit {run.returncode}): {run.stderr[-300:]}")
    verdict = judge(report, waivers, date.today())
    for failure in verdict.failures:
        print(f"dependency audit: {failure}")
    if verdict.failures:
        return 1
    if verdict.not_audited:
        return _not_run(
            f"{len(verdict.not_audited)} of {len(verdict.not_audited) + verdict.audited} "
            "packages could not be looked up in the vulnerability database"
        )
    print(f"dependency audit: {verdict.audited} packages, no known vulnerability unwaived")
    return 0


def _not_run(why: str) -> int:
    print(
        f"dependency audit DID NOT RUN: {why}. Run `make lint` where PyPI's JSON API is reachable."
    )
    return 0 if os.environ.get("TRM_AUDIT_OFFLINE") == "warn" else 2


if __name__ == "__main__":
    raise SystemExit(main())
