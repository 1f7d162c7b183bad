"""Prometheus metrics of one broker (or worker) process, served at `/metrics`.

Labels are message types, refusal reasons, delivery outcomes, error classes, route templates
and alert kinds: small fixed vocabularies. No message, case or participant id is ever a label
(the data concerns victims of trafficking, and ids would also make the series unbounded).

Counters count what this process did; the gauges over the database (queue, alerts, ledger)
are read at each scrape and are the same on every replica: aggregate them with ``max``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.delivery.observer import Outcome, error_class
from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.messages import MessageType
from trm_broker.store import gauges
from trm_broker.web.problems import Problem

#: The classic text exposition format, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: A scrape answers without the database's gauges rather than hang on an unreachable one.
DATABASE_TIMEOUT_SECONDS = 5.0
#: Request latencies up to the pull inbox's long-polls (at most 300 s, 30 s by default).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ALERT_KINDS = tuple(kind.value for kind in AlertKind)
#: A label value we did not spell ourselves must look like a code, or it becomes ``other``.
_CODE = re.compile(r"^[a-z0-9_-]{1,64}$")

log = structlog.get_logger("trm_broker.metrics")


def _code(value: str) -> str:
    return value if _CODE.match(value) else "other"


def refusal_reason(problem: Problem) -> str:
    """The workflow or consent rule a refusal names (``consent_scope``), else the problem's
    slug (``invalid-envelope``)."""
    return _code(str(problem.extensions.get("rule") or problem.slug))


class BrokerMetrics:
    """The metrics of one app, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._accepted = Counter(
            "trm_messages_accepted",
            "Envelopes accepted (receipted), by message type.",
            ["type"],
            registry=self.registry,
        )
        self._refused = Counter(
            "trm_messages_refused",
            "Envelopes refused, by message type (unknown until the signature verified) and "
            "reason: the consent or workflow rule, else the problem type.",
            ["type", "reason"],
            registry=self.registry,
        )
        self._attempts = Counter(
            "trm_delivery_attempts",
            "Pushes to recipients' inboxes, by outcome (acknowledged, rejected, failed) and "
            "error class of a failure (none otherwise).",
            ["outcome", "error"],
            registry=self.registry,
        )
        self._dead_letters = Counter(
            "trm_dead_letters",
            "Deliveries given up after TRM_DELIVERY_MAX_AGE_SECONDS (each raises an alert).",
            registry=self.registry,
        )
        self._latency = Histogram(
            "trm_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Series that exist from the start, so rates and alerts see zeros, not gaps.
        for message_type in MessageType:
            self._accepted.labels(type=message_type.value)
        for outcome in ("acknowledged", "rejected"):
            self._attempts.labels(outcome=outcome, error="none")

    # --- what the process does --------------------------------------------------------

    def accepted(self, message_type: str) -> None:
        self._accepted.labels(type=_message_type(message_type)).inc()

    def refused(self, message_type: str, problem: Problem) -> None:
        self._refused.labels(type=_message_type(message_type), reason=refusal_reason(problem)).inc()

    def attempted(self, outcome: Outcome, error: str | None) -> None:
        """A push ended (as the dispatcher's ``DeliveryObserver``)."""
        self._attempts.labels(outcome=outcome, error=error_class(error)).inc()

    def dead_lettered(self, count: int) -> None:
        self._dead_letters.inc(count)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """A request was answered (the request middleware's observer); ``route`` is the
        template (``/v1/messages/{message_id}``), never the path."""
        self._latency.labels(
            route=route, method=method if method in _METHODS else "other", status=str(status)
        ).observe(seconds)

    # --- the scrape -------------------------------------------------------------------

    async def render(self, sessions: async_sessionmaker[AsyncSession]) -> bytes:
        """The exposition text: this process's counters, then the gauges read from the
        database now (only ``trm_database_up 0`` when it cannot be read)."""
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS), sessions() as session:
                found: gauges.Gauges | None = await gauges.read(session)
        except Exception as exc:  # the scrape still answers: the outage is what it reports
            log.warning("metrics_database_unavailable", error_type=type(exc).__name__)
            found = None
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_DatabaseGauges(found, datetime.now(UTC)))
        return generate_latest(self.registry) + generate_latest(scrape)


def _message_type(value: str) -> str:
    return value if value in MessageType._value2member_map_ else "unknown"


class _DatabaseGauges(Collector):
    """One scrape's gauges over the database, from the values just read."""

    def __init__(self, found: gauges.Gauges | None, now: datetime) -> None:
        self._found = found
        self._now = now

    def _age(self, since: datetime | None) -> float:
        return max(0.0, (self._now - since).total_seconds()) if since is not None else 0.0

    def collect(self) -> Iterable[Metric]:
        found = self._found
        yield GaugeMetricFamily(
            "trm_database_up",
            "1 if this scrape could read the database, else 0 (and no other database gauge).",
            value=0 if found is None else 1,
        )
        if found is None:
            return
        yield GaugeMetricFamily(
            "trm_delivery_queue_depth",
            "Deliveries waiting for their recipient's answer (pushed or pulled).",
            value=found.pending,
        )
        yield GaugeMetricFamily(
            "trm_delivery_oldest_pending_age_seconds",
            "How long the longest-waiting pending delivery has been queued (0: none).",
            value=self._age(found.oldest_queued_at),
        )
        yield GaugeMetricFamily(
            "trm_deliveries_dead_lettered",
            "Dead letters waiting for an operator's re-queue.",
            value=found.dead_lettered,
        )
        alerts = GaugeMetricFamily("trm_alerts_open", "Open alerts, by kind.", labels=["kind"])
        counts = dict.fromkeys(_ALERT_KINDS, 0)
        for kind, count in found.open_alerts.items():
            counts[_code(kind)] = counts.get(_code(kind), 0) + count
        for kind, count in sorted(counts.items()):
            alerts.add_metric([kind], count)
        yield alerts
        yield GaugeMetricFamily(
            "trm_ledger_unsequenced_entries",
            "Ledger entries committed but not yet in the Merkle tree (the sequencer's backlog).",
            value=found.unsequenced,
        )
        if found.checkpoint_size is None:
            return
        yield GaugeMetricFamily(
            "trm_ledger_size",
            "Entries in the ledger's latest signed checkpoint.",
            value=found.checkpoint_size,
        )
        yield GaugeMetricFamily(
            "trm_ledger_checkpoint_age_seconds",
            "Time since the latest checkpoint was signed (a new one follows each new entry).",
            value=self._age(found.checkpoint_issued_at),
        )
