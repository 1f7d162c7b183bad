"""sent status: what the broker says became of each message the node sent (issue 18)

``node_sent_status``: one row per message in ``node_sent``, its status at the broker
(accepted, delivered, acknowledged, rejected, dead_lettered, dropped) as the node's status
tracker last read it, with the broker's times and when it reads it next.
``node_sent_status_changes``: each status a message took, with the broker's time for it and
when the node learned it. Both are new tables: the previous release writes neither; the
tracker starts tracking every ``node_sent`` row without a status (those sent before this
revision too) at its first pass.

Revision ID: n0005
Revises: n0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "n0005"
down_revision: str | None = "n0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = ("accepted", "delivered", "acknowledged", "rejected", "dead_lettered", "dropped")


def _status_check(table: str) -> sa.CheckConstraint:
    # ``op.f``: the name is final; the models' naming convention would prefix it again.
    listed = ", ".join(repr(value) for value in _STATUSES)
    return sa.CheckConstraint(f"status IN ({listed})", name=op.f(f"ck_{table}_status"))


def upgrade() -> None:
    op.create_table(
        "node_sent_status",
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ledger_index", sa.Integer(), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
        sa.Column("delivery_error", sa.String(64), nullable=True),
        sa.Column("rejection", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unchanged_checks", sa.Integer(), nullable=False),
        sa.Column("failed_checks", sa.Integer(), nullable=False),
        sa.Column("check_error", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_node_sent_status")),
        _status_check("node_sent_status"),
    )
    op.create_index(op.f("ix_node_sent_status_status"), "node_sent_status", ["status"])
    op.create_index(
        op.f("ix_node_sent_status_next_check_at"), "node_sent_status", ["next_check_at"]
    )
    op.create_table(
        "node_sent_status_changes",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_node_sent_status_changes")),
        _status_check("node_sent_status_changes"),
    )
    op.create_index(
        op.f("ix_node_sent_status_changes_message_id"),
        "node_sent_status_changes",
        ["message_id"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_node_sent_status_changes_message_id"), table_name="node_sent_status_changes"
    )
    op.drop_table("node_sent_status_changes")
    op.drop_index(op.f("ix_node_sent_status_next_check_at"), table_name="node_sent_status")
    op.drop_index(op.f("ix_node_sent_status_status"), table_name="node_sent_status")
    op.drop_table("node_sent_status")
