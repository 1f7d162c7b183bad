"""The broker application: routers, error handling, and its lifetime (key, database, dispatcher)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import structlog
from fastapi import FastAPI
from pydantic import BaseModel

from trm_broker import __version__
from trm_broker.api import address_limit, broker_info, console, docs, health
from trm_broker.api.audit.endpoints import router as audit_router
from trm_broker.api.cases.endpoints import router as cases_router
from trm_broker.api.consents.endpoints import router as consents_router
from trm_broker.api.consents.schemas import ConsentIn
from trm_broker.api.deliveries.endpoints import router as deliveries_router
from trm_broker.api.deps import BrokerState
from trm_broker.api.inbox.endpoints import router as inbox_router
from trm_broker.api.inbox.schemas import AckIn
from trm_broker.api.ledger.endpoints import router as ledger_router
from trm_broker.api.messages.endpoints import router as messages_router
from trm_broker.api.metrics import BrokerMetrics
from trm_broker.api.participants.endpoints import router as participants_router
from trm_broker.api.participants.schemas import KeyRotationIn, ParticipantIn
from trm_broker.background.alert_scheduler import AlertScheduler
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.background.retention import RetentionPurger
from trm_broker.background.sequencer import LedgerSequencer
from trm_broker.crypto import broker_keys
from trm_broker.settings import Settings
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.migrate import check_schema_current
from trm_broker.web import limits, middleware, problems, tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("trm_broker.app")


class _Worker(Protocol):
    async def run_forever(self) -> None: ...

    def stop(self) -> None: ...


@asynccontextmanager
async def _running(workers: dict[str, _Worker]) -> AsyncIterator[None]:
    """Run background workers beside the API; on shutdown stop them and wait for each."""
    tasks = {name: asyncio.create_task(w.run_forever(), name=name) for name, w in workers.items()}
    try:
        yield
    finally:
        for worker in workers.values():
            worker.stop()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


def create_app(
    settings: Settings,
    *,
    run_dispatcher: bool | None = None,
    run_sequencer: bool = True,
    worker: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """Build the broker app. Start-up refuses a database whose migrations are behind.

    ``run_dispatcher`` defaults to TRM_RUN_DISPATCHER. ``worker``: the app of
    `trm-broker worker`: the dispatcher and the health endpoints, no API, and the broker's
    key must already exist. With TRM_OTEL_ENABLED, requests are traced through
    ``tracer_provider``, by default one exporting over OTLP (missing SDK:
    :class:`~trm_broker.web.tracing.TracingUnavailable`, before anything starts).
    """
    dispatching = settings.run_dispatcher if run_dispatcher is None else run_dispatcher
    metrics = BrokerMetrics()
    traces = None
    if settings.otel_enabled:
        traces = tracer_provider or tracing.otlp_tracer_provider(
            "trm-broker-worker" if worker else "trm-broker", settings.otel_endpoint
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        try:
            await check_schema_current(engine)
            document = settings.broker_key.get_secret_value() if settings.broker_key else None
            # A worker signs pushes with the broker's key: it must exist, never be made anew.
            keys = broker_keys.load(settings.broker_key_file, document, create=not worker)
            state = BrokerState(
                settings=settings,
                engine=engine,
                sessions=session_factory(engine),
                signing_key=keys.signing,
                retired_keys=keys.retired,
                next_key=keys.next,
                metrics=metrics,
            )
            app.state.broker = state
            async with httpx.AsyncClient(follow_redirects=False) as http:
                workers: dict[str, _Worker] = {}
                if run_sequencer and not worker:
                    sequencer = LedgerSequencer(state.sessions, state.note_signer())
                    # A checkpoint exists before the first request (size 0 on a new ledger).
                    await sequencer.run_once()
                    state.extras["wake_sequencer"] = sequencer.wake
                    workers["sequencer"] = sequencer
                    retention = RetentionPurger(
                        state.sessions, timedelta(seconds=settings.retention_seconds)
                    )
                    state.extras["wake_retention"] = retention.wake
                    workers["retention"] = retention
                    workers["alerts"] = AlertScheduler(
                        state.sessions, state.rules(), interval=settings.alert_check_seconds
                    )
                if dispatching or worker:
                    dispatcher = _dispatcher(state, http)
                    state.extras["wake_dispatcher"] = dispatcher.wake
                    workers["dispatcher"] = dispatcher
                log.info("broker_started", kid=state.signing_key.kid, workers=sorted(workers))
                async with _running(workers):
                    yield
                log.info("broker_stopped")
        finally:
            await engine.dispose()
            if traces is not None and tracer_provider is None:  # ours: flush what is left
                await asyncio.to_thread(traces.shutdown)

    if worker:
        app = FastAPI(title="trm-broker worker", version=__version__, lifespan=lifespan)
        problems.install(app)
        middleware.install(app, observe=metrics.observe_request)
        if traces is not None:
            tracing.install(app, traces)
        app.include_router(health.router)
        return app
    app = FastAPI(
        title="trm-broker",
        version=__version__,
        description="Signed, sealed, consent-gated case transfers between NRMs (docs/design.md).",
        lifespan=lifespan,
        dependencies=[address_limit.DEPENDENCY],
        # Served by api/docs.py, as routes under the rate limit like every other.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    limits.install(app, settings)
    address_limit.install(app)
    middleware.install(app, observe=metrics.observe_request)
    if traces is not None:
        tracing.install(app, traces)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(broker_info.router)
    app.include_router(participants_router)
    app.include_router(messages_router)
    app.include_router(inbox_router)
    app.include_router(deliveries_router)
    app.include_router(ledger_router)
    app.include_router(consents_router)
    app.include_router(cases_router)
    app.include_router(audit_router)
    console.install(app)
    _document_signed_bodies(app, [ParticipantIn, KeyRotationIn, ConsentIn, AckIn])
    problems.document(app)
    return app


def _dispatcher(state: BrokerState, http: httpx.AsyncClient) -> DeliveryDispatcher:
    settings = state.settings
    return DeliveryDispatcher(
        state.sessions,
        http,
        timeout=settings.delivery_timeout_seconds,
        poll_interval=settings.delivery_poll_seconds,
        backoff_cap=settings.delivery_backoff_max_seconds,
        max_age=settings.delivery_max_age_seconds,
        policy=state.inbox_policy(),
        signing_key=state.signing_key,
        concurrency=settings.delivery_concurrency,
        # SQLite has one dispatcher (inside serve): what a killed one leased is due now.
        release_on_start=state.engine.dialect.name == "sqlite",
        observer=state.metrics,
    )


def _document_signed_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add to the OpenAPI components the bodies that endpoints parse themselves, after
    checking the request's signature over the raw bytes."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
