"""console counters: per-day figures the console reads instead of the whole ledger

The auditors' console (issue 20) must answer in under 100 ms on a million ledger entries:

- ``ledger_days``: the first and last index of each UTC day's entries, so that a search by
  time reads only the indexes between (``at`` grows with the index, but not strictly);
- ``message_days``: messages by day, type, sender and recipient (on PostgreSQL in 16 shards
  by message id, so that concurrent accepts of the same pair do not queue on one row until
  their commits; the report adds the shards up), and ``case_referrals``: each
  case's first referral and first reception confirmation, so that the auditors' report adds
  up a row a day and reads a row a case instead of every message of its period;
- ``ledger_entries`` (country1, idx) and (country2, idx) in place of the single-column
  country indexes, so that a search by country reads a page in index order whether the
  country is common or rare; ``messages`` (accepted_at), for a report's partial days.

Database triggers keep the three tables in the transaction of the rows they count, whoever
writes them: this release's broker, a replica of the previous one still serving while this
runs, or a bulk load. The tables are filled here from the rows already there, after the
triggers exist (PostgreSQL runs this in one transaction that holds off writers meanwhile).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trm_broker.store.models import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# --- the triggers, one set per backend ---------------------------------------------------

_POSTGRESQL = [
    """
    CREATE FUNCTION trm_ledger_day() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.idx IS NOT NULL THEN
            INSERT INTO ledger_days AS d (day, first_idx, last_idx)
            VALUES (to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), NEW.idx, NEW.idx)
            ON CONFLICT (day) DO UPDATE SET
                first_idx = least(d.first_idx, excluded.first_idx),
                last_idx = greatest(d.last_idx, excluded.last_idx);
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER trm_ledger_day AFTER INSERT OR UPDATE OF idx ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION trm_ledger_day()
    """,
    """
    CREATE FUNCTION trm_message_counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO message_days AS d (day, type, sender_id, recipient_id, shard, count)
        VALUES (
            to_char(NEW.accepted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
            NEW.type, NEW.sender_id, NEW.recipient_id, hashtext(NEW.id) & 15, 1
        )
        ON CONFLICT (day, type, sender_id, recipient_id, shard)
        DO UPDATE SET count = d.count + 1;
        IF NEW.type = 'referral' THEN
            INSERT INTO case_referrals AS c
                (case_ref, referred_at, referral_id, sender_id, recipient_id)
            VALUES (NEW.case_ref, NEW.accepted_at, NEW.id, NEW.sender_id, NEW.recipient_id)
            ON CONFLICT (case_ref) DO UPDATE SET
                referred_at = excluded.referred_at,
                referral_id = excluded.referral_id,
                sender_id = excluded.sender_id,
                recipient_id = excluded.recipient_id
            WHERE c.referred_at IS NULL
                OR (excluded.referred_at, excluded.referral_id) < (c.referred_at, c.referral_id);
        ELSIF NEW.type = 'reception_confirmation' THEN
            INSERT INTO case_referrals AS c (case_ref, received_at)
            VALUES (NEW.case_ref, NEW.accepted_at)
            ON CONFLICT (case_ref) DO UPDATE SET received_at = excluded.received_at
            WHERE c.received_at IS NULL OR excluded.received_at < c.received_at;
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER trm_message_counted AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION trm_message_counted()
    """,
]

_SQLITE_LEDGER_DAY = """
    INSERT INTO ledger_days (day, first_idx, last_idx)
    VALUES (date(NEW.at), NEW.idx, NEW.idx)
    ON CONFLICT (day) DO UPDATE SET
        first_idx = min(first_idx, excluded.first_idx),
        last_idx = max(last_idx, excluded.last_idx);
"""

# SQLite stores a UTC time as fixed-width text: comparing the text compares the times.
_SQLITE = [
    f"""
    CREATE TRIGGER trm_ledger_day_inserted AFTER INSERT ON ledger_entries
    WHEN NEW.idx IS NOT NULL BEGIN {_SQLITE_LEDGER_DAY} END
    """,
    f"""
    CREATE TRIGGER trm_ledger_day_indexed AFTER UPDATE OF idx ON ledger_entries
    WHEN NEW.idx IS NOT NULL BEGIN {_SQLITE_LEDGER_DAY} END
    """,
    """
    CREATE TRIGGER trm_message_counted AFTER INSERT ON messages BEGIN
        INSERT INTO message_days (day, type, sender_id, recipient_id, shard, count)
        VALUES (date(NEW.accepted_at), NEW.type, NEW.sender_id, NEW.recipient_id, 0, 1)
        ON CONFLICT (day, type, sender_id, recipient_id, shard)
        DO UPDATE SET count = count + 1;
        INSERT INTO case_referrals (case_ref, referred_at, referral_id, sender_id, recipient_id)
        SELECT NEW.case_ref, NEW.accepted_at, NEW.id, NEW.sender_id, NEW.recipient_id
        WHERE NEW.type = 'referral'
        ON CONFLICT (case_ref) DO UPDATE SET
            referred_at = excluded.referred_at,
            referral_id = excluded.referral_id,
            sender_id = excluded.sender_id,
            recipient_id = excluded.recipient_id
        WHERE case_referrals.referred_at IS NULL
            OR (excluded.referred_at, excluded.referral_id)
                < (case_referrals.referred_at, case_referrals.referral_id);
        INSERT INTO case_referrals (case_ref, received_at)
        SELECT NEW.case_ref, NEW.accepted_at WHERE NEW.type = 'reception_confirmation'
        ON CONFLICT (case_ref) DO UPDATE SET received_at = excluded.received_at
        WHERE case_referrals.received_at IS NULL
            OR excluded.received_at < case_referrals.received_at;
    END
    """,
]

_DROP = {
    "postgresql": [
        "DROP TRIGGER trm_message_counted ON messages",
        "DROP FUNCTION trm_message_counted()",
        "DROP TRIGGER trm_ledger_day ON ledger_entries",
        "DROP FUNCTION trm_ledger_day()",
    ],
    "sqlite": [
        "DROP TRIGGER trm_message_counted",
        "DROP TRIGGER trm_ledger_day_indexed",
        "DROP TRIGGER trm_ledger_day_inserted",
    ],
}

# --- filling the tables from the rows already there --------------------------------------


def _day(column: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    return f"date({column})"


def _backfill(dialect: str) -> list[str]:
    # The day expressions are this file's own constants, no input: no injection possible.
    at, accepted = _day("at", dialect), _day("accepted_at", dialect)
    return [
        f"""
        INSERT INTO ledger_days (day, first_idx, last_idx)
        SELECT {at}, min(idx), max(idx) FROM ledger_entries WHERE idx IS NOT NULL
        GROUP BY {at}
        """,  # noqa: S608
        f"""
        INSERT INTO message_days (day, type, sender_id, recipient_id, shard, count)
        SELECT {accepted}, type, sender_id, recipient_id, 0, count(*) FROM messages
        GROUP BY {accepted}, type, sender_id, recipient_id
        """,  # noqa: S608
        """
        INSERT INTO case_referrals
            (case_ref, referred_at, referral_id, sender_id, recipient_id, received_at)
        SELECT c.case_ref, r.accepted_at, r.id, r.sender_id, r.recipient_id, c.received_at
        FROM (
            SELECT case_ref,
                min(CASE WHEN type = 'reception_confirmation' THEN accepted_at END)
                    AS received_at
            FROM messages WHERE type IN ('referral', 'reception_confirmation')
            GROUP BY case_ref
        ) AS c
        LEFT JOIN messages AS r ON r.id = (
            SELECT m.id FROM messages AS m
            WHERE m.case_ref = c.case_ref AND m.type = 'referral'
            ORDER BY m.accepted_at, m.id LIMIT 1
        )
        """,
    ]


def upgrade() -> None:
    op.create_table(
        "ledger_days",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("first_idx", sa.BigInteger(), nullable=False),
        sa.Column("last_idx", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_ledger_days"),
    )
    op.create_table(
        "message_days",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("sender_id", sa.String(length=64), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "type", "sender_id", "recipient_id", "shard", name="pk_message_days"
        ),
    )
    op.create_table(
        "case_referrals",
        sa.Column("case_ref", sa.String(length=64), nullable=False),
        sa.Column("referred_at", UTCDateTime(), nullable=True),
        sa.Column("referral_id", sa.String(length=36), nullable=True),
        sa.Column("sender_id", sa.String(length=64), nullable=True),
        sa.Column("recipient_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("case_ref", name="pk_case_referrals"),
    )
    op.create_index("ix_case_referrals_referred_at", "case_referrals", ["referred_at"])
    op.create_index("ix_messages_accepted_at", "messages", ["accepted_at"])
    for column in ("country1", "country2"):
        op.create_index(f"ix_ledger_entries_{column}_idx", "ledger_entries", [column, "idx"])
        op.drop_index(f"ix_ledger_entries_{column}", table_name="ledger_entries")
    dialect = op.get_bind().dialect.name
    for statement in _POSTGRESQL if dialect == "postgresql" else _SQLITE:
        op.execute(statement)
    for statement in _backfill(dialect):
        op.execute(statement)


def downgrade() -> None:
    for statement in _DROP[op.get_bind().dialect.name]:
        op.execute(statement)
    for column in ("country1", "country2"):
        op.create_index(f"ix_ledger_entries_{column}", "ledger_entries", [column])
        op.drop_index(f"ix_ledger_entries_{column}_idx", table_name="ledger_entries")
    op.drop_index("ix_messages_accepted_at", table_name="messages")
    op.drop_index("ix_case_referrals_referred_at", table_name="case_referrals")
    op.drop_table("case_referrals")
    op.drop_table("message_days")
    op.drop_table("ledger_days")
