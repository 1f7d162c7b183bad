"""Counts and durations for auditors. Every count below the threshold k (default 11, as the
CTDC global dataset uses) is suppressed, so a report never singles out a person."""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.messages import MessageType
from trm_broker.store import report_figures as figures
from trm_broker.store.models import AlertRecord, ConsentRecord, Refusal


def _cell(count: int, k: int) -> int | None:
    """A count, or None when it is below k (suppressed)."""
    return count if count >= k else None


def _timing(durations: list[float], k: int) -> dict[str, Any]:
    """How many durations (hours), and their median and 90th percentile once there are k."""
    timing: dict[str, Any] = {"cases": _cell(len(durations), k), "suppressed": len(durations) < k}
    if len(durations) >= k:
        timing["median_hours"] = round(statistics.median(durations), 1)
        p90 = (
            statistics.quantiles(durations, n=10, method="inclusive")[-1]
            if len(durations) > 1
            else durations[0]
        )
        timing["p90_hours"] = round(p90, 1)
    return timing


def week_of(day: date) -> date:
    """The Monday starting the ISO week of ``day``."""
    return day - timedelta(days=day.weekday())


async def report(session: AsyncSession, since: datetime, until: datetime, k: int) -> dict[str, Any]:
    # The message figures come from the per-day counters the database keeps as messages are
    # accepted (store.report_figures): exactly the messages of the period, without reading
    # them all at each request.
    messages = [
        {
            "type": MessageType(type_),
            "from_country": origin,
            "to_country": destination,
            "count": _cell(count, k),
            "suppressed": count < k,
        }
        for type_, origin, destination, count in await figures.by_type_and_pair(
            session, since, until
        )
    ]
    # Time from referral to reception confirmation, per case first referred in the range
    # (and confirmed received, whenever), overall and by its first referral's country pair.
    times = await figures.referral_times(session, since, until)
    durations = sorted((t.received_at - t.referred_at).total_seconds() / 3600 for t in times)
    timing = _timing(durations, k)
    hours_by_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    for t in times:
        hours_by_pair[(t.from_country, t.to_country)].append(
            (t.received_at - t.referred_at).total_seconds() / 3600
        )
    weekly: Counter[tuple[date, str]] = Counter()
    for text, type_, n in await figures.by_day_and_type(session, since, until):
        weekly[(week_of(date.fromisoformat(text)), str(type_))] += n
    alerts = await session.execute(
        select(AlertRecord.kind, func.count())
        .where(AlertRecord.raised_at >= since, AlertRecord.raised_at < until)
        .group_by(AlertRecord.kind)
        .order_by(AlertRecord.kind)
    )
    refusals = await session.execute(
        select(Refusal.rule, func.count())
        .where(Refusal.at >= since, Refusal.at < until)
        .group_by(Refusal.rule)
        .order_by(Refusal.rule)
    )
    # Alerts still open at the end of the period, whenever raised.
    still_open = await session.execute(
        select(AlertRecord.kind, func.count())
        .where(
            AlertRecord.raised_at < until,
            or_(AlertRecord.closed_at.is_(None), AlertRecord.closed_at >= until),
        )
        .group_by(AlertRecord.kind)
        .order_by(AlertRecord.kind)
    )
    withdrawals = await session.scalar(
        select(func.count()).where(
            ConsentRecord.withdrawn_at >= since, ConsentRecord.withdrawn_at < until
        )
    )
    return {
        "from": since.isoformat(),
        "to": until.isoformat(),
        "min_cell": k,
        "messages": messages,
        "referral_to_reception": timing,
        "alerts": [
            {"kind": kind, "count": _cell(n, k), "suppressed": n < k} for kind, n in alerts.all()
        ],
        "refusals": [
            {"rule": rule, "count": _cell(n, k), "suppressed": n < k} for rule, n in refusals.all()
        ],
        "consent_withdrawals": {
            "count": _cell(withdrawals or 0, k),
            "suppressed": (withdrawals or 0) < k,
        },
        "messages_per_week": [
            {"week": week.isoformat(), "type": type_, "count": _cell(n, k), "suppressed": n < k}
            for (week, type_), n in sorted(weekly.items())
        ],
        "referral_to_reception_by_pair": [
            {"from_country": origin, "to_country": destination, **_timing(sorted(hours), k)}
            for (origin, destination), hours in sorted(hours_by_pair.items())
        ],
        "open_alerts": [
            {"kind": kind, "count": _cell(n, k), "suppressed": n < k}
            for kind, n in still_open.all()
        ],
    }


def as_csv(data: dict[str, Any]) -> str:
    """One row per cell: section, key, count (empty when suppressed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "key", "count", "suppressed"])
    for row in data["messages"]:
        key = f"{row['type']} {row['from_country']}->{row['to_country']}"
        writer.writerow(["messages", key, row["count"] or "", row["suppressed"]])
    timing = data["referral_to_reception"]
    writer.writerow(["referral_to_reception", "cases", timing["cases"] or "", timing["suppressed"]])
    for name in ("median_hours", "p90_hours"):
        if name in timing:
            writer.writerow(["referral_to_reception", name, timing[name], False])
    for section, key in (("alerts", "kind"), ("refusals", "rule")):
        for row in data[section]:
            writer.writerow([section, row[key], row["count"] or "", row["suppressed"]])
    withdrawals = data["consent_withdrawals"]
    writer.writerow(
        ["consent_withdrawals", "all", withdrawals["count"] or "", withdrawals["suppressed"]]
    )
    for row in data["messages_per_week"]:
        key = f"{row['week']} {row['type']}"
        writer.writerow(["messages_per_week", key, row["count"] or "", row["suppressed"]])
    for row in data["referral_to_reception_by_pair"]:
        pair = f"{row['from_country']}->{row['to_country']}"
        writer.writerow(
            [
                "referral_to_reception_by_pair",
                f"{pair} cases",
                row["cases"] or "",
                row["suppressed"],
            ]
        )
        for name in ("median_hours", "p90_hours"):
            if name in row:
                writer.writerow(
                    ["referral_to_reception_by_pair", f"{pair} {name}", row[name], False]
                )
    for row in data["open_alerts"]:
        writer.writerow(["open_alerts", row["kind"], row["count"] or "", row["suppressed"]])
    return out.getvalue()
