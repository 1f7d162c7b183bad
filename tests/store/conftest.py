"""Fixtures the store's tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it (not the suite's migrated template): the migrations
    run in the test."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("empty_postgres_database")
    return url
