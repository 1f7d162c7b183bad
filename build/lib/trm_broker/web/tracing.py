"""Optional OpenTelemetry traces (TRM_OTEL_ENABLED): one server span per HTTP request.

A span holds the method, the route template and the status, nothing else: no path (it may
hold a message id or case reference), no query string, no header, no body, and no exception
text (which may quote data). The SDK and the OTLP exporter are the ``otel`` extra; the
broker runs without them while tracing is off.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TracingUnavailable(RuntimeError):
    """Tracing is enabled but the OpenTelemetry SDK or its exporter is not installed."""


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TracingUnavailable(
            f"TRM_OTEL_ENABLED is true but {module} cannot be imported: install the "
            "`otel` extra (pip install 'trm-broker[otel]': opentelemetry-sdk and "
            "opentelemetry-exporter-otlp-proto-http), or set TRM_OTEL_ENABLED=false."
        ) from exc


def otlp_tracer_provider(service_name: str, endpoint: str | None) -> TracerProvider:
    """A provider that exports spans in batches over OTLP/HTTP to ``endpoint`` (the traces
    URL, e.g. ``http://collector:4318/v1/traces``); unset: the standard
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``. Raises
    :class:`TracingUnavailable` when the packages are missing."""
    _require("opentelemetry.sdk.trace")
    exporters = _require("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = (
        exporters.OTLPSpanExporter(endpoint=endpoint) if endpoint else exporters.OTLPSpanExporter()
    )
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class RequestSpans:
    """ASGI middleware: a SERVER span around each HTTP request, named ``METHOD /route``."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, StatusCode

        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        status = 500  # unless the app answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with self.tracer.start_as_current_span(
            method, kind=SpanKind.SERVER, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                # The template the router matched (``/v1/messages/{message_id}``).
                route = getattr(scope.get("route"), "path", None)
                span.update_name(f"{method} {route}" if route else method)
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.response.status_code", status)
                if route:
                    span.set_attribute("http.route", route)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)


def install(app: FastAPI, provider: TracerProvider) -> None:
    """Trace every request of ``app`` with ``provider``: outermost, so a span also covers
    the request middleware and sees the status the caller gets."""
    app.add_middleware(RequestSpans, tracer=provider.get_tracer("trm_broker"))
