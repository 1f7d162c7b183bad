"""user preferences: the web app's language and time zone a user chose (issue 19)

``node_users.language`` and ``node_users.time_zone``: set on the web app's settings page;
NULL until the user chooses (the browser's language and time zone are used then). Two
nullable columns: the previous release's rows keep working as they are.

Revision ID: n0007
Revises: n0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "n0007"
down_revision: str | None = "n0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("node_users") as table:
        table.add_column(sa.Column("language", sa.String(16), nullable=True))
        table.add_column(sa.Column("time_zone", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("node_users") as table:
        table.drop_column("time_zone")
        table.drop_column("language")
