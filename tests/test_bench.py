"""`make bench` stays runnable: its short forms run here (timings are not checked in tests;
the console's query plans are, and the throughput benches' counting of every answer)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` from the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_ledger_benchmark_runs_in_its_short_form() -> None:
    result = _bench("bench.ledger", "--quick")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ledger integration after accept" in result.stdout
    assert "inclusion proof at size    1000" in result.stdout


def test_the_startup_benchmark_times_every_process_it_starts() -> None:
    result = _bench("bench.startup", "--rounds", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = {line[:34].strip(): line[34:].split() for line in result.stdout.splitlines()[1:]}
    started = ["db upgrade", "operator init", "serve (until ready)"]
    started += ["node users add (new database)", "node serve (until ready)", "node serve again"]
    assert list(rows) == [*started, "all of them"]
    for name in started:  # each took some CPU, and no more wall time than a start can
        cpu, wall = (float(figure) for figure in rows[name])
        assert 0 < cpu < 60
        assert 0 < wall < 60


def test_the_console_benchmark_runs_in_its_short_form_without_full_scans() -> None:
    result = _bench("bench.console", "--quick")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "PostgreSQL: 10,000 ledger entries" in result.stdout
    assert "SQLite: 10,000 ledger entries" in result.stdout
    assert "ledger: deep page by country" in result.stdout
    assert "no full scan of the ledger): met" in result.stdout


def _wrk_or_skip() -> None:
    """wrk drives the throughput benches (tools/ensure-wrk.sh installs it): skipped where it
    is missing, except in CI (CI=true), where that fails, as the browser tests do."""
    if shutil.which("wrk") is None:
        message = "wrk is not installed (tools/ensure-wrk.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI requires it)")
        pytest.skip(message)


def _quick(parts: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`python -m bench --quick --only <parts>`, its results written to ``tmp_path``."""
    _wrk_or_skip()
    env = {**os.environ, "TRM_BENCH_RESULTS": str(tmp_path)}
    if "TRM_TEST_POSTGRES_URL" in os.environ:
        env["TRM_BENCH_POSTGRES_URL"] = os.environ["TRM_TEST_POSTGRES_URL"]
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", parts],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "latest.png").stat().st_size > 0
    data: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())
    return result, data


@pytest.mark.e2e
def test_the_accept_benchmark_counts_every_answer_against_its_baseline(tmp_path: Path) -> None:
    result, data = _quick("accept", tmp_path)
    assert "| POST /v1/messages, PostgreSQL, 8 connections" in result.stdout
    assert "| POST /v1/consents, SQLite, 2 connections" in result.stdout
    assert "targets: not checked (--quick)" in result.stdout
    accepted = 0
    for backend in ("postgresql", "sqlite"):
        for kind in ("messages", "consents"):
            for rounds in data["accept"][backend][kind]:
                for run in rounds["runs"]:
                    # Every answer is counted by its status, and a round with any answer
                    # that is not a success is failed (an overloaded broker may refuse).
                    assert sum(run["statuses"].values()) == run["answered"] > 0, run
                    successes = {"201", "202"} if kind == "messages" else {"201"}
                    if not set(run["statuses"]) <= successes:
                        assert run["failed"], run
                    if kind == "messages":
                        accepted += run["statuses"].get("202", 0)
    assert accepted > 0
    assert data["baselines"]["trivial"][0]["rate"] > 0
    assert data["machine"]["git_revision"]


@pytest.mark.e2e
def test_the_end_to_end_ledger_and_growth_benchmarks_run_in_their_short_form(
    tmp_path: Path,
) -> None:
    result, data = _quick("e2e,ledger,growth", tmp_path)
    (latency,) = data["end_to_end"]
    # Every message the broker accepted came back acknowledged by the recipient's node.
    assert latency["acknowledged"] == latency["accepted"] == latency["sent"] > 0
    assert latency["p99_ms"] is not None
    assert [(p["backend"], p["entries"]) for p in data["ledger"]["proofs"]] == [
        (backend, size) for backend in ("postgresql", "sqlite") for size in (1_000, 10_000)
    ]
    verified = data["growth"]["verify"]
    assert verified["entries"] >= 2_000  # the bulk-loaded ledger and what the rounds added
    assert "ledger verify against raw SHA-256" in result.stdout
