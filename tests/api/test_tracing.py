"""Optional OpenTelemetry traces: one span per request with its method, route template and
status, and nothing a caller sent."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.support import broker_settings, referral, running_broker
from trm_broker.api.app import create_app
from trm_broker.crypto.keys import KeySet
from trm_broker.settings import Settings
from trm_broker.web.tracing import TracingUnavailable

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
CANARY = "Jane-Doe-1990-01-01"
EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


async def test_requests_are_spans_with_route_templates_and_no_data(
    sqlite_database: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = broker_settings(sqlite_database, tmp_path, otel_enabled=True)
    async with running_broker(settings, tracer_provider=provider) as broker:
        assert (await broker.register(AT, "AT")).status_code == 201
        assert (await broker.register(NG, "NG")).status_code == 201
        case_ref = "AT-case-trace-01"
        payload = {"identification_summary": CANARY}
        accepted = await broker.submit(referral(AT, NG, payload=payload, case_ref=case_ref))
        assert accepted.status_code == 202
        message_id = accepted.json()["message_id"]
        status = await broker.call(
            "GET", f"/v1/messages/{message_id}?note={CANARY}", AT, headers={"x-note": CANARY}
        )
        assert status.status_code == 200
        assert (await broker.client.get(f"/nothing/{case_ref}")).status_code == 404

    spans = exporter.get_finished_spans()
    names = [span.name for span in spans]
    assert "POST /v1/messages" in names
    assert "GET /v1/messages/{message_id}" in names
    assert names[-1] == "GET"  # no route matched: the method alone
    for span in spans:
        assert span.kind is SpanKind.SERVER
        attributes: dict[str, Any] = dict(span.attributes or {})
        assert set(attributes) <= {"http.request.method", "http.route", "http.response.status_code"}
        assert span.status.status_code is not StatusCode.ERROR
    submit = next(span for span in spans if span.name == "POST /v1/messages")
    assert dict(submit.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v1/messages",
        "http.response.status_code": 202,
    }
    exported = "".join(span.to_json() for span in spans)
    for secret in (CANARY, message_id, case_ref, AT.participant, NG.participant, "note"):
        assert secret not in exported


def test_tracing_without_the_sdk_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(broker_key_file=tmp_path / "key.json", otel_enabled=True)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(TracingUnavailable, match=r"TRM_OTEL_ENABLED.*trm-broker\[otel\]"):
        create_app(settings)
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, EXPORTER_MODULE, None)
    with pytest.raises(TracingUnavailable, match="opentelemetry-exporter-otlp-proto-http"):
        create_app(settings, worker=True)


def test_tracing_exports_over_otlp_to_the_configured_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str | None] = []

    class OTLPSpanExporter(InMemorySpanExporter):
        def __init__(self, endpoint: str | None = None) -> None:
            super().__init__()
            made.append(endpoint)

    module = types.ModuleType(EXPORTER_MODULE)
    module.OTLPSpanExporter = OTLPSpanExporter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, EXPORTER_MODULE, module)
    endpoint = "http://collector.example:4318/v1/traces"
    create_app(Settings(broker_key_file=tmp_path / "key.json", otel_enabled=True))
    create_app(
        Settings(broker_key_file=tmp_path / "key.json", otel_enabled=True, otel_endpoint=endpoint)
    )
    create_app(Settings(broker_key_file=tmp_path / "key.json"))  # off: no exporter at all
    assert made == [None, endpoint]
