"""console sessions: the auditors' console's sign-in challenges and sessions

Two tables of the broker's console (issue 20): ``console_challenges`` (the SHA-256 of each
one-time sign-in challenge, the key it was issued to, its expiry) and ``console_sessions``
(the SHA-256 of each session id, the key that signed in, the session's CSRF secret and
times). Neither holds a secret a copy of the database could use.

And three indexes of ``ledger_entries`` for the console's ledger search, which finds entries
by country (either of an entry's two) or by time alone, a page at a time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_challenges",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["kid"],
            ["participant_keys.kid"],
            name="fk_console_challenges_kid_participant_keys",
        ),
        sa.PrimaryKeyConstraint("digest", name="pk_console_challenges"),
    )
    op.create_index("ix_console_challenges_kid", "console_challenges", ["kid"])
    op.create_index("ix_console_challenges_expires_at", "console_challenges", ["expires_at"])
    op.create_table(
        "console_sessions",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("csrf_secret", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["kid"],
            ["participant_keys.kid"],
            name="fk_console_sessions_kid_participant_keys",
        ),
        sa.PrimaryKeyConstraint("digest", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_kid", "console_sessions", ["kid"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    for column in ("country1", "country2", "at"):
        op.create_index(f"ix_ledger_entries_{column}", "ledger_entries", [column])


def downgrade() -> None:
    for column in ("country1", "country2", "at"):
        op.drop_index(f"ix_ledger_entries_{column}", table_name="ledger_entries")
    op.drop_table("console_sessions")
    op.drop_table("console_challenges")
