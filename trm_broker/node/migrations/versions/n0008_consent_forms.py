"""consent forms: the signed consent forms a focal point's case worker uploads (issue 19)

``node_consent_forms``: one row per uploaded form: its organisation, case and consent, the
consent as registered at the broker, the file (PDF, PNG or JPEG), its size and digest, who
uploaded it and when, and when its consent was registered (NULL: a draft). A new table: the
previous release writes none.

Revision ID: n0008
Revises: n0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "n0008"
down_revision: str | None = "n0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_consent_forms",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=False),
        sa.Column("case_ref", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(128), nullable=False),
        sa.Column("consent", sa.Text(), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_consent_forms")),
        sa.UniqueConstraint("consent_id", name=op.f("uq_node_consent_forms_consent_id")),
    )
    op.create_index(op.f("ix_node_consent_forms_case_ref"), "node_consent_forms", ["case_ref"])


def downgrade() -> None:
    op.drop_index(op.f("ix_node_consent_forms_case_ref"), table_name="node_consent_forms")
    op.drop_table("node_consent_forms")
