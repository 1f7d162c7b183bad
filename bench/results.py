"""What `make bench` reports: the machine and revision, each figure beside its baseline with
the ratio, the targets of issue 21 and whether they hold; written as JSON, a Markdown table
and a PNG chart under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Where a run's files go (TRM_BENCH_RESULTS: elsewhere, e.g. the tests' temporary directory).
RESULTS = Path(os.environ.get("TRM_BENCH_RESULTS") or Path(__file__).with_name("results"))
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One line of the table: a figure, its baseline (if any) and its target (if any)."""

    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    holds: bool | None = None  # None: no target, or not checked in this run

    def ratio(self) -> str:
        if self.value is None or not self.baseline:
            return ""
        share = self.value / self.baseline
        return f"{100 * share:.1f} %" if share < 10 else f"x{share:.0f}"

    def json(self) -> dict[str, Any]:
        return {**self.__dict__, "ratio": self.ratio()}


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "none (see the figure)"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python, PostgreSQL, the git revision."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": _run(["psql", "--version"]),
        "wrk": _run([shutil.which("wrk") or "wrk", "-v"]).splitlines()[0:1],
        "git_revision": _run(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        "load_average_at_start": os.getloadavg(),
    }


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603
            args, capture_output=True, text=True, check=False, timeout=10, cwd=ROOT
        )
    except OSError:
        return ""
    return (done.stdout or done.stderr).strip()


def table(rows: list[Row], checked: bool) -> str:
    lines = [
        "| Figure | Measured | Baseline (same run) | Ratio | Target | Holds |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        baseline = (
            f"{_number(row.baseline, '')} {row.baseline_name}".strip()
            if row.baseline is not None
            else ""
        )
        holds = "" if row.holds is None else ("yes" if row.holds else "**no**")
        if row.target and not checked:
            holds = "not checked"
        lines.append(
            f"| {row.figure} | {_number(row.value, row.unit)} | {baseline} | {row.ratio()} | "
            f"{row.target} | {holds} |"
        )
    return "\n".join(lines)


def chart(data: dict[str, Any], path: Path) -> None:
    """Accept rate by connections (broker on each backend, trivial endpoint) and end-to-end
    latency by offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, series in data.get("throughput", {}).items():
        points = [(s["connections"], s["rate"]) for s in series if s["rate"]]
        if points:
            left.plot(*zip(*points, strict=True), marker="o", label=name)
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("connections")
    left.set_ylabel("answers/s (2xx)")
    left.set_title("Accept throughput against the trivial endpoint")
    if left.lines:
        left.legend(fontsize="small")
    latency = data.get("end_to_end", [])
    points = [(x["rate"], x["p99_ms"]) for x in latency if x.get("p99_ms") is not None]
    if points:
        right.plot(*zip(*points, strict=True), marker="o", label="p99")
        p50 = [(x["rate"], x["p50_ms"]) for x in latency if x.get("p50_ms") is not None]
        right.plot(*zip(*p50, strict=True), marker="o", label="p50")
        right.axhline(100, linestyle="--", color="grey", label="target p99 at 200/s")
        right.set_yscale("log")
    right.set_xlabel("offered messages/s")
    right.set_ylabel("POST to signed acknowledgement (ms)")
    right.set_title("End-to-end latency (PostgreSQL)")
    if right.lines:
        right.legend(fontsize="small")
    figure.suptitle(f"trm-broker make bench, {data['machine']['git_revision']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(data: dict[str, Any], rows: list[Row], checked: bool) -> Path:
    """The run's JSON, Markdown and PNG; the path of the Markdown."""
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = RESULTS / f"bench-{stamp}"
    data = {**data, "table": [r.json() for r in rows], "targets_checked": checked}
    base.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    m = data["machine"]
    header = (
        f"# make bench, {stamp}\n\n{m['cpu']}, {m['cores']} cores, {m['memory_mb']:,} MiB, "
        f"Python {m['python']}, {m['postgresql']}; revision {m['git_revision']}"
        f"{' (uncommitted changes)' if m['git_dirty'] else ''}; load average at start "
        f"{m['load_average_at_start'][0]:.1f}.\n\n"
    )
    base.with_suffix(".md").write_text(header + table(rows, checked) + "\n")
    chart(data, base.with_suffix(".png"))
    for suffix in (".json", ".md", ".png"):
        shutil.copyfile(base.with_suffix(suffix), (RESULTS / "latest").with_suffix(suffix))
    return base.with_suffix(".md")
