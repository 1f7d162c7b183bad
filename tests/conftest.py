"""Databases for the suite: every test that takes ``database_url`` runs on SQLite and on
PostgreSQL, each in a fresh, fully migrated database of its own.

PostgreSQL is found at TRM_TEST_POSTGRES_URL (default: the local server, user postgres).
Where it is unreachable its tests are skipped, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url

from tests.databases import copy_sqlite, migrated_node_sqlite_template, migrated_sqlite_template
from trm_broker.dev import cluster, launch
from trm_broker.node.migrate import upgrade as upgrade_node
from trm_broker.store.migrate import upgrade

#: Every coroutine test ends its leftover tasks, boundedly (tests/leftover_tasks.py).
pytest_plugins = ["tests.leftover_tasks"]

# No property test may depend on the machine's speed: hypothesis's deadline (200 ms per
# example) and its too-slow health check fail on a loaded machine (two suites on two cores)
# with nothing wrong in the code. Tests still set their own max_examples.
settings.register_profile("trm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "trm"))


def pytest_configure(config: pytest.Config) -> None:
    """The suite's clusters fork their `trm-broker` processes from one that has loaded the
    command's modules (trm_broker/dev/launch.py): each starts in a fraction of a second
    instead of one or two seconds of CPU. TRM_TEST_PLAIN_STARTS=1 starts each as a new
    interpreter, as `trm-broker demo` does."""
    if os.environ.get("TRM_TEST_PLAIN_STARTS") != "1":
        cluster.use_launcher(launch.Preloaded())


POSTGRES_URL = os.environ.get(
    "TRM_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
T = TypeVar("T")
_TEMPLATE = f"trm_test_template_{os.getpid()}"
_NODE_TEMPLATE = f"trm_test_node_template_{os.getpid()}"


def _dsn(database: str) -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def _sa_url(database: str) -> str:
    return make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


async def _admin(*statements: str) -> None:
    connection = await asyncpg.connect(_dsn(make_url(POSTGRES_URL).database or "postgres"))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _create(name: str, template: str, wait: float = 60.0) -> None:
    """CREATE DATABASE from ``template``, tried again while the server says the template
    is in use (a connection the server had not yet closed, on a busy machine)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            return
        except asyncpg.ObjectInUseError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _blocking(work: Callable[[], T]) -> T:
    """``work`` (which may run its own event loop) from a fixture that an async fixture asked
    for with ``request.getfixturevalue``: inside that fixture's loop, on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result()


def _run(coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return _blocking(lambda: asyncio.run(coroutine()))


def _postgres_reachable() -> bool:
    try:
        _run(lambda: _admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError):
        return False
    return True


def _postgres_template(name: str, migrate: Callable[[str], object]) -> Iterator[str]:
    """A template database migrated by ``migrate``; tests clone it (fast) and drop clones."""
    if not _postgres_reachable():
        message = f"PostgreSQL unreachable at {make_url(POSTGRES_URL).render_as_string()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI requires it)")
        pytest.skip(message)
    _run(
        lambda: _admin(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
        )
    )
    _blocking(lambda: migrate(_sa_url(name)))
    # No connection to the template from now on, not even autovacuum's (it skips databases
    # that allow none): CREATE DATABASE ... TEMPLATE fails while anyone is connected to it.
    _run(lambda: _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    yield name
    _clones.close()  # the clones made ahead and the drops still queued, before the template
    _run(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The broker's migrated template database (`trm-broker db upgrade`)."""
    yield from _postgres_template(_TEMPLATE, upgrade)


@pytest.fixture(scope="session")
def node_postgres_template() -> Iterator[str]:
    """The node's migrated template database (`trm-broker node db upgrade`)."""
    yield from _postgres_template(_NODE_TEMPLATE, upgrade_node)


class _Clones:
    """Test databases cloned from a template one test ahead, and dropped after their test,
    on a thread of their own: a test waits for neither (each is a connection and a
    CREATE or DROP DATABASE, about a fifth of a second on a busy machine)."""

    def __init__(self) -> None:
        self._work = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
        self._ahead: dict[str, Future[str]] = {}
        self._drops: dict[str, Future[None]] = {}

    def _clone(self, template: str) -> str:
        name = f"trm_test_{secrets.token_hex(6)}"
        asyncio.run(_create(name, template))
        return name

    def take(self, template: str) -> str:
        """A new database cloned from ``template``; the next one is started at once."""
        ready = self._ahead.pop(template, None) or self._work.submit(self._clone, template)
        name = ready.result()
        self._ahead[template] = self._work.submit(self._clone, template)
        return name

    def drop(self, name: str) -> None:
        self._drops[name] = self._work.submit(
            lambda: asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        )

    def close(self) -> None:
        """Drop the clones made ahead; wait for every queued drop, and fail naming any
        database a drop left behind."""
        for ready in self._ahead.values():
            with contextlib.suppress(Exception):
                self.drop(ready.result())
        self._ahead.clear()
        self._work.shutdown(wait=True)
        self._work = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
        left = {name: drop.exception() for name, drop in self._drops.items() if drop.exception()}
        self._drops.clear()
        if left:
            raise RuntimeError(f"test databases not dropped: {left}")


_clones = _Clones()


def _fresh_database(template: str | None) -> Iterator[str]:
    if template is None:
        # An empty one from template0, which accepts no connections (template1 may have some).
        name = f"trm_test_{secrets.token_hex(6)}"
        _run(lambda: _create(name, "template0"))
    else:
        name = _clones.take(template)
    yield _sa_url(name)
    _clones.drop(name)


@pytest.fixture
def postgres_database(postgres_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test; its SQLAlchemy URL."""
    yield from _fresh_database(postgres_template)


@pytest.fixture
def another_empty_postgres_database(postgres_template: str) -> Iterator[str]:
    """A second empty one, beside ``empty_postgres_database`` (to compare two schemas)."""
    yield from _fresh_database(None)


@pytest.fixture
def node_postgres_database(node_postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database with the node's schema at head, for one test."""
    yield from _fresh_database(node_postgres_template)


@pytest.fixture
def empty_postgres_database(postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database with no schema at all."""
    yield from _fresh_database(None)


@pytest.fixture(scope="module")
def module_empty_postgres_database(postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database with no schema, for one module's tests to share (an
    end-to-end module that runs one cluster for all its tests)."""
    yield from _fresh_database(None)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session (per xdist worker): each test copies it."""
    return migrated_sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture
def sqlite_database(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test: a copy of the template."""
    return copy_sqlite(sqlite_template, tmp_path / "broker.db")


@pytest.fixture(scope="session")
def node_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the node's schema at head, once per session: tests copy it."""
    folder = tmp_path_factory.mktemp("node-sqlite-template")
    return _blocking(lambda: migrated_node_sqlite_template(folder))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated broker database on each backend."""
    fixture = "sqlite_database" if backend == "sqlite" else "postgres_database"
    url: str = request.getfixturevalue(fixture)
    return url


# --- markers: what `make test-fast` leaves out ---------------------------------------------

_TESTS = Path(__file__).parent
#: Tests that run real processes besides pytest's (a broker, a node, pip building a wheel,
#: the benchmark, a browser): every test under tests/e2e and tests/browser, and these files.
_PROCESSES = (
    _TESTS / "e2e",
    _TESTS / "browser",
    _TESTS / "deploy" / "test_wheel.py",
    _TESTS / "test_bench.py",
)
#: The fuzzing (schemathesis over the APIs, atheris over the parsers); `make fuzz` at length.
_FUZZING = (_TESTS / "security" / "test_api_fuzz.py", _TESTS / "fuzz")
_POSTGRES_FIXTURES = {
    "postgres_template",
    "postgres_database",
    "empty_postgres_database",
    "module_empty_postgres_database",
    "another_empty_postgres_database",
    "node_postgres_template",
    "node_postgres_database",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what the inner loop leaves out (`make test-fast`: -m "not e2e and not postgres
    and not fuzz"), so no file has to remember its marks: ``e2e`` for real processes,
    ``fuzz`` for the fuzzing, ``postgres`` for every test on PostgreSQL."""
    for item in items:
        if any(item.path.is_relative_to(place) for place in _PROCESSES):
            item.add_marker(pytest.mark.e2e)
        if any(item.path.is_relative_to(place) for place in _FUZZING):
            item.add_marker(pytest.mark.fuzz)
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("backend") == "postgresql"
        if on_postgres or _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


# --- what the proofs checked ----------------------------------------------------------------
# The delivery proofs (tests/e2e/test_delivery_*) and the access-control matrix print their
# counts (sent, receipted, delivered, lost, duplicated; cells checked), and so do the
# security proofs (fuzz examples and runs, canary hits). Passing tests' output
# is captured, and with pytest-xdist it is on another process: show it in the summary.

_PROOFS = (
    "tests/e2e/test_delivery_",
    "tests/e2e/test_no_personal_data",
    "tests/security/",
    "tests/fuzz/",
)
_proof_lines: list[tuple[str, str]] = []
_LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.nodeid.startswith(_PROOFS):
        # Only what the test printed: not the log lines of brokers running in-process.
        lines = [line for line in report.capstdout.splitlines() if not _LOG_LINE.match(line)]
        text = "\n".join(lines).strip()
        if text:
            _proof_lines.append((report.nodeid, text))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _proof_lines:
        return
    terminalreporter.section("what the delivery and security proofs checked")
    for nodeid, text in sorted(_proof_lines):
        terminalreporter.write_line(nodeid)
        for line in text.splitlines():
            if line.strip():
                terminalreporter.write_line("    " + line.strip())
