"""users and audit: the node's user accounts per organisation, their API tokens, and the
audit log of what users do (issue 18)

Revision ID: n0004
Revises: n0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "n0004"
down_revision: str | None = "n0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLES = ("case_worker", "supervisor", "read_only")


def upgrade() -> None:
    op.create_table(
        "node_users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.CheckConstraint(
            f"role IN ({', '.join(repr(role) for role in _ROLES)})",
            name=op.f("ck_node_users_role"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_node_users")),
    )
    op.create_index(op.f("ix_node_users_organisation"), "node_users", ["organisation"])
    op.create_table(
        "node_user_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_name"],
            ["node_users.name"],
            name=op.f("fk_node_user_tokens_user_name_node_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_user_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_node_user_tokens_digest")),
    )
    op.create_index(op.f("ix_node_user_tokens_user_name"), "node_user_tokens", ["user_name"])
    op.create_table(
        "node_audit",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=True),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_node_audit")),
    )
    op.create_index(op.f("ix_node_audit_at"), "node_audit", ["at"])
    op.create_index(op.f("ix_node_audit_organisation"), "node_audit", ["organisation"])
    op.create_index(op.f("ix_node_audit_case_ref"), "node_audit", ["case_ref"])


def downgrade() -> None:
    op.drop_index(op.f("ix_node_audit_case_ref"), table_name="node_audit")
    op.drop_index(op.f("ix_node_audit_organisation"), table_name="node_audit")
    op.drop_index(op.f("ix_node_audit_at"), table_name="node_audit")
    op.drop_table("node_audit")
    op.drop_index(op.f("ix_node_user_tokens_user_name"), table_name="node_user_tokens")
    op.drop_table("node_user_tokens")
    op.drop_index(op.f("ix_node_users_organisation"), table_name="node_users")
    op.drop_table("node_users")
