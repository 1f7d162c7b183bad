"""Fixtures the end-to-end tests share."""

from __future__ import annotations

import pytest


@pytest.fixture
def broker_database(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The broker's database for a cluster: on SQLite none (the cluster's own file), on
    PostgreSQL a fresh empty database (the cluster migrates it)."""
    if backend == "sqlite":
        return None  # the cluster's own SQLite file, migrated by `trm-broker db upgrade`
    url: str = request.getfixturevalue("empty_postgres_database")
    return url
