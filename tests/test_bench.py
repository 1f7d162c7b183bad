"""`make bench` stays runnable: its short forms run here (timings are not checked in tests;
the console's query plans are)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_ledger_benchmark_runs_in_its_short_form() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.ledger", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ledger integration after accept" in result.stdout
    assert "inclusion proof at size    1000" in result.stdout


def test_the_console_benchmark_runs_in_its_short_form_without_full_scans() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.console", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "PostgreSQL: 10,000 ledger entries" in result.stdout
    assert "SQLite: 10,000 ledger entries" in result.stdout
    assert "ledger: deep page by country" in result.stdout
    assert "no full scan of the ledger): met" in result.stdout
