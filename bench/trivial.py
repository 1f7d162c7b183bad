"""The baseline server: a FastAPI app with one trivial endpoint, served exactly as every
`trm-broker` server is (:func:`trm_broker.web.server.run`: the same uvicorn protocol, header
deadline and options), so the broker's figures can be read against the framework's ceiling.

    python -m bench.trivial            (TRM_HOST, TRM_PORT as for `trm-broker serve`)
"""

from __future__ import annotations

from fastapi import FastAPI

from trm_broker.logs import configure_logging
from trm_broker.settings import Settings
from trm_broker.web import server


def app() -> FastAPI:
    trivial = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @trivial.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @trivial.post("/trivial")
    async def post(body: dict[str, object]) -> dict[str, int]:
        return {"fields": len(body)}

    @trivial.get("/trivial")
    async def get() -> dict[str, bool]:
        return {"ok": True}

    return trivial


if __name__ == "__main__":
    settings = Settings()
    configure_logging(settings.log_level)
    server.run(app(), settings.host, settings.port, settings)
