"""registry version: a counter every change of the registry moves, in its own transaction

One row (``registry_version``, ``id`` 1) whose ``version`` is incremented by triggers on
every INSERT, UPDATE or DELETE of ``participants`` and ``participant_keys`` (and a TRUNCATE
on PostgreSQL), whoever makes it: the API, the CLI, another broker process or an
operator's hand-written SQL. A broker process caches the registry's rows and reads this
one number at the start of each signed request: a different number drops the cache, so a
revocation or rotation counts from the very next request, in every process
(docs/performance-accept-path.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("participants", "participant_keys")


def upgrade() -> None:
    op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registry_version"),
    )
    op.execute("INSERT INTO registry_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION registry_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; "
            "RETURN NULL; END $$"
        )
        for table in _TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_registry_version AFTER INSERT OR UPDATE OR DELETE "
                f"OR TRUNCATE ON {table} FOR EACH STATEMENT "
                "EXECUTE FUNCTION registry_version_bump()"
            )
        return
    for table in _TABLES:
        for action in ("INSERT", "UPDATE", "DELETE"):
            # Constant names only, no input: the two tables and three actions above.
            statement = (
                f"CREATE TRIGGER {table}_{action.lower()}_registry_version AFTER {action} "  # noqa: S608
                f"ON {table} BEGIN UPDATE registry_version SET version = version + 1 "
                "WHERE id = 1; END"
            )
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"DROP TRIGGER {table}_registry_version ON {table}")
        op.execute("DROP FUNCTION registry_version_bump()")
    else:
        for table in _TABLES:
            for action in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {table}_{action}_registry_version")
    op.drop_table("registry_version")
