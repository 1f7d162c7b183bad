"""`make bench` stays runnable: its short form runs here (timings are not checked in tests)."""

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
