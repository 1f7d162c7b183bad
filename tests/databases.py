"""Migrated SQLite databases for tests, fast: the migrations run once into a template file,
and each test gets a byte copy of it (a file copy takes a millisecond; the migrations take
a tenth of a second, and far more on a loaded machine).

The template is a real `trm-broker db upgrade` result (the node's: `trm-broker node db
upgrade`): the tests of the migrations themselves (tests/store/test_migrations.py,
tests/store/test_upgrade.py, tests/node/test_migrations.py) start from empty databases and
run them.
"""

from __future__ import annotations

import functools
import shutil
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from trm_broker.node.migrate import upgrade as upgrade_node
from trm_broker.store.migrate import upgrade


def migrated_sqlite_template(folder: Path) -> Path:
    """Migrate a new SQLite file in ``folder`` to head, and leave it whole in one file."""
    template = folder / "template.db"
    upgrade(f"sqlite+aiosqlite:///{template}")
    return _whole(template)


def migrated_node_sqlite_template(folder: Path) -> Path:
    """The same with the node's migrations (`trm-broker node db upgrade`)."""
    template = folder / "node-template.db"
    upgrade_node(f"sqlite+aiosqlite:///{template}")
    return _whole(template)


def _whole(template: Path) -> Path:
    # The broker's connections use WAL: fold the log into the file and switch the journal
    # off WAL, so the file alone is the database (a copy without its -wal file would lose
    # whatever the log still held). Each copy goes back to WAL when the broker opens it.
    with closing(sqlite3.connect(template)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")
    for suffix in ("-wal", "-shm"):
        leftover = template.with_name(template.name + suffix)
        if leftover.exists() and leftover.stat().st_size:
            raise RuntimeError(f"the template's {suffix} file is not empty")
    return template


@functools.cache
def process_sqlite_template() -> Path:
    """A template for code outside fixtures (hypothesis state machines): one per process,
    in a temporary folder removed at exit."""
    folder = tempfile.TemporaryDirectory(prefix="trm-sqlite-template-")
    _keep.append(folder)
    return migrated_sqlite_template(Path(folder.name))


@functools.cache
def process_node_sqlite_template() -> Path:
    """The node's, likewise; migrated on a thread of its own, so that code running in an
    event loop (an async context manager starting a node) may ask for it."""
    folder = tempfile.TemporaryDirectory(prefix="trm-node-sqlite-template-")
    _keep.append(folder)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(migrated_node_sqlite_template, Path(folder.name)).result()


_keep: list[tempfile.TemporaryDirectory[str]] = []


def copy_sqlite(template: Path, destination: Path) -> str:
    """Copy ``template`` to ``destination``; the SQLAlchemy URL of the copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, destination)
    return f"sqlite+aiosqlite:///{destination}"
