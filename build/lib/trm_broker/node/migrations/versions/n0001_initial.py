"""initial: the node's schema as the release before issue 17 created it (with ``create_all``)

``node_received`` (what the node's participants received, decrypted), ``node_rejected``
(the signed rejections of payloads that did not fit their schema), ``node_sent`` (what they
sent, with the broker's receipt) and ``node_request_nonces`` (the broker's signed pushes,
against replay). A database that release made has no version table: `trm-broker node db
upgrade` recognises it as this revision, stamps it and upgrades it (trm_broker/node/migrate.py).
The type lists are written out, not read from the code, so this revision means the same
whatever a later release adds.

Revision ID: n0001
Revises:
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "n0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE_TYPES = (
    "referral",
    "referral_response",
    "risk_assessment",
    "return_preparation",
    "reception_confirmation",
    "case_monitoring",
    "case_closure",
    "consent_withdrawal",
)


def _type_check(table: str) -> sa.CheckConstraint:
    # ``op.f``: the name is final; the models' naming convention would prefix it again.
    listed = ", ".join(repr(value) for value in _MESSAGE_TYPES)
    return sa.CheckConstraint(f"type IN ({listed})", name=op.f(f"ck_{table}_type"))


def upgrade() -> None:
    op.create_table(
        "node_received",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope_digest", sa.String(80), nullable=False),
        sa.Column("header", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("ack", sa.Text(), nullable=False),
        _type_check("node_received"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_node_received")),
        sa.UniqueConstraint("id", name=op.f("uq_node_received_id")),
    )
    op.create_table(
        "node_rejected",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("envelope_digest", sa.String(80), nullable=False),
        sa.Column("ack", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_rejected")),
    )
    op.create_table(
        "node_sent",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope_digest", sa.String(80), nullable=False),
        sa.Column("receipt", sa.Text(), nullable=False),
        _type_check("node_sent"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_sent")),
    )
    op.create_table(
        "node_request_nonces",
        sa.Column("keyid", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("keyid", "nonce", name=op.f("pk_node_request_nonces")),
    )
    op.create_index(
        op.f("ix_node_request_nonces_expires_at"), "node_request_nonces", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_node_request_nonces_expires_at"), table_name="node_request_nonces")
    op.drop_table("node_request_nonces")
    op.drop_table("node_sent")
    op.drop_table("node_rejected")
    op.drop_table("node_received")
