"""web sessions: the node's web app signs its users in (issue 19)

``node_web_sessions``: one row per signed-in browser: the SHA-256 of its session id (never
the id), its user, the CSRF secret of its forms, the browser's time zone, and when it began,
was last seen and ends at the latest. A new table: the previous release writes none.

Revision ID: n0006
Revises: n0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "n0006"
down_revision: str | None = "n0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_web_sessions",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("csrf_secret", sa.String(64), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_name"],
            ["node_users.name"],
            name=op.f("fk_node_web_sessions_user_name_node_users"),
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_node_web_sessions")),
    )
    op.create_index(op.f("ix_node_web_sessions_user_name"), "node_web_sessions", ["user_name"])
    op.create_index(op.f("ix_node_web_sessions_expires_at"), "node_web_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_node_web_sessions_expires_at"), table_name="node_web_sessions")
    op.drop_index(op.f("ix_node_web_sessions_user_name"), table_name="node_web_sessions")
    op.drop_table("node_web_sessions")
