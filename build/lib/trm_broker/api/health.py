"""`/healthz` (the process is alive), `/readyz` (database reachable, schema current) and
`/metrics` (Prometheus). None needs authentication, and none shows an id of a message, case
or participant."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text

from trm_broker.api.deps import State
from trm_broker.api.metrics import CONTENT_TYPE
from trm_broker.store.migrate import SchemaNotCurrentError, check_schema_current
from trm_broker.web.problems import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready (problem+json)."}})
async def readyz(state: State) -> dict[str, str]:
    try:
        async with state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        await check_schema_current(state.engine)
    except SchemaNotCurrentError as exc:
        raise Unavailable(str(exc)) from exc
    except Exception as exc:
        raise Unavailable("The database is unreachable.") from exc
    return {"status": "ready"}


# Operators' plumbing, not part of the contract between countries: left out of the OpenAPI.
@router.get("/metrics", include_in_schema=False)
async def metrics(state: State) -> Response:
    """Prometheus exposition; answers even while the database is unreachable
    (``trm_database_up 0``)."""
    return Response(await state.metrics.render(state.sessions), media_type=CONTENT_TYPE)
