"""Every dependency of the broker's and the node's routes is a coroutine: FastAPI runs a plain
function dependency in a worker thread, a thread hop on every request that used the route
(issue 21: one such hop cost 2 % of the accept path's CPU)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from trm_broker.api.app import create_app
from trm_broker.crypto.keys import KeySet
from trm_broker.node.app import create_node_app
from trm_broker.settings import Settings


def _routes(routes: list[Any], seen: set[int]) -> Iterator[APIRoute]:
    """Every API route, those of included routers and mounted apps too."""
    for route in routes:
        if id(route) in seen:
            continue
        seen.add(id(route))
        if isinstance(route, APIRoute):
            yield route
        for inner in (
            route,
            *(getattr(route, a, None) for a in ("original_router", "router", "app")),
        ):
            nested = getattr(inner, "routes", None)
            if nested:
                yield from _routes(list(nested), seen)


def _plain(dependant: Dependant) -> Iterator[str]:
    for dependency in dependant.dependencies:
        call = dependency.call
        if call is not None and not (
            inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
        ):
            yield f"{call.__module__}.{call.__qualname__}"
        yield from _plain(dependency)


def _plain_dependencies(app: FastAPI) -> tuple[int, set[str]]:
    routes = {id(r): r for r in _routes(list(app.routes), set())}
    found = {name for route in routes.values() for name in _plain(route.dependant)}
    found |= {
        f"{r.endpoint.__module__}.{r.endpoint.__qualname__} (endpoint)"
        for r in routes.values()
        if not inspect.iscoroutinefunction(r.endpoint)
    }
    return len(routes), found


def test_no_broker_route_hands_a_dependency_to_a_worker_thread(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"))
    routes, plain = _plain_dependencies(app)
    assert routes > 30  # every route was looked at, the messages' too
    assert plain == set()


def test_no_node_route_hands_a_dependency_to_a_worker_thread(tmp_path: Path) -> None:
    keys = tmp_path / "ng.keys.json"
    KeySet.generate("ng.naptip").write(keys)
    settings = Settings(
        node_database_url=f"sqlite+aiosqlite:///{tmp_path / 'n.db'}",
        node_key_files=[keys],
        node_api_token="t" * 32,
        node_broker_url="http://broker",
    )
    routes, plain = _plain_dependencies(create_node_app(settings))
    assert routes > 30
    assert plain == set()
