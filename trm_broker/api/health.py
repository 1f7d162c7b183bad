"""`/healthz` (the process is alive) and `/readyz` (database reachable, schema current)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from trm_broker.api.deps import State
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
