"""The overview's tables as rows (issue 20), from the auditors' report as
``GET /v1/audit/report`` computes it: what each table and its CSV show, and the charts
drawn from them. Suppressed cells stay empty: no rule of suppression is repeated here."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from trm_broker.api.console.charts import BarChart, bar_chart

Rows = list[list[Any]]


def _count(row: dict[str, Any]) -> int | None:
    return None if row["suppressed"] else row["count"]


def _messages(report: dict[str, Any]) -> Rows:
    return [[r["type"], r["from_country"], r["to_country"], _count(r)] for r in report["messages"]]


def _per_week(report: dict[str, Any]) -> Rows:
    return [[r["week"], r["type"], _count(r)] for r in report["messages_per_week"]]


def _timing(report: dict[str, Any]) -> Rows:
    return [
        [
            r["from_country"],
            r["to_country"],
            None if r["suppressed"] else r["cases"],
            r.get("median_hours"),
            r.get("p90_hours"),
        ]
        for r in report["referral_to_reception_by_pair"]
    ]


def _by(section: str, key: str) -> Callable[[dict[str, Any]], Rows]:
    return lambda report: [[r[key], _count(r)] for r in report[section]]


#: Each table: its CSV's header, and its rows from the report.
TABLES: dict[str, tuple[list[str], Callable[[dict[str, Any]], Rows]]] = {
    "messages": (["type", "from_country", "to_country", "count"], _messages),
    "messages-per-week": (["week", "type", "count"], _per_week),
    "referral-to-reception": (
        ["from_country", "to_country", "cases", "median_hours", "p90_hours"],
        _timing,
    ),
    "open-alerts": (["kind", "count"], _by("open_alerts", "kind")),
    "alerts": (["kind", "count"], _by("alerts", "kind")),
    "refusals": (["rule", "count"], _by("refusals", "rule")),
}


def as_csv(header: list[str], rows: Rows) -> str:
    """A table as CSV: a suppressed cell is empty, as in the report's CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
    return out.getvalue()


def weekly_chart(report: dict[str, Any]) -> tuple[BarChart, list[str], Rows]:
    """Messages per week, stacked by type; and the table of weeks by type it draws."""
    types = sorted({r["type"] for r in report["messages_per_week"]})
    weeks: dict[str, dict[str, int | None]] = {}
    for r in report["messages_per_week"]:
        weeks.setdefault(r["week"], {})[r["type"]] = _count(r)
    counted = [(week, [counts.get(t) for t in types]) for week, counts in sorted(weeks.items())]
    chart = bar_chart(counted, types, stacked=True)
    rows: Rows = [[week, *values] for week, values in counted]
    return chart, types, rows


def charts(report: dict[str, Any]) -> dict[str, BarChart]:
    """The bar charts of the overview's tables but the weekly one."""
    timing = _timing(report)
    return {
        "referral-to-reception": bar_chart(
            [(f"{r[0]} → {r[1]}", [r[3], r[4]]) for r in timing], ["median", "p90"], stacked=False
        ),
        "open-alerts": bar_chart(
            [(str(k), [n]) for k, n in _by("open_alerts", "kind")(report)], ["count"], stacked=True
        ),
        "refusals": bar_chart(
            [(str(k), [n]) for k, n in _by("refusals", "rule")(report)], ["count"], stacked=True
        ),
    }
