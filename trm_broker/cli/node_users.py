"""`trm-broker node users`: the node's user accounts, their roles and API tokens.

Run on the node's host with the node's settings (TRM_NODE_DATABASE_URL, and
TRM_NODE_KEY_FILES or TRM_NODE_KEYS for the organisations it serves). A new token is printed
once, alone on standard output (so ``TOKEN=$(trm-broker node users add …)`` keeps it); the
rest goes to standard error.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from trm_broker.settings_explained import settings_or_exit

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from trm_broker.node.users import IssuedToken, Role

T = TypeVar("T")

users_app = typer.Typer(
    help="The node's user accounts: one organisation and one role each, with API tokens.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="A user's API tokens.", no_args_is_help=True)
password_app = typer.Typer(help="A user's password (for POST /login).", no_args_is_help=True)
users_app.add_typer(token_app, name="token")
users_app.add_typer(password_app, name="password")

NameArgument = Annotated[str, typer.Argument(help="The user's name, e.g. ada.okafor.")]
LabelOption = Annotated[
    str | None, typer.Option(help="What the token is for (a device, a script), up to 64.")
]


def _run(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``work`` in one transaction on the node's database (on SQLite upgraded first, as the
    node does at start; elsewhere it must be current: `trm-broker node db upgrade`)."""
    from trm_broker.logs import configure_logging
    from trm_broker.node.migrate import (
        NodeSchemaNotCurrentError,
        UnknownNodeSchemaError,
        ready_schema,
    )
    from trm_broker.node.users import UserError
    from trm_broker.store.database import create_engine, session_factory

    settings = settings_or_exit()
    # Log lines (a schema upgrade) go to stderr: stdout holds only what the command prints,
    # such as a token, for a script to read.
    configure_logging(settings.log_level)

    async def main() -> T:
        engine = create_engine(settings.node_database_url)
        try:
            await ready_schema(settings.node_database_url, engine)
            async with session_factory(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except UserError as exc:
        typer.echo(f"trm-broker: {exc}", err=True)
        raise typer.Exit(1) from None
    except (NodeSchemaNotCurrentError, UnknownNodeSchemaError) as exc:
        typer.echo(f"trm-broker: {exc}", err=True)
        raise typer.Exit(2) from None


def _print_token(issued: IssuedToken) -> None:
    typer.echo(f"token {issued.id}, shown once: keep it secret.", err=True)
    typer.echo(issued.token)


def _check_name(name: str) -> None:
    from trm_broker.node.users import ADMINISTRATOR, USER_NAME_PATTERN

    if not re.match(USER_NAME_PATTERN, name) or name == ADMINISTRATOR:
        typer.echo(
            "trm-broker: a user name is 1-64 lower-case letters, digits and . _ @ -, starting "
            f"with a letter or digit, and not {ADMINISTRATOR}.",
            err=True,
        )
        raise typer.Exit(2)


def _served() -> list[str]:
    from trm_broker.node.keyring import load_keyring

    return load_keyring(settings_or_exit()).participants()


@users_app.command("add")
def users_add(
    name: NameArgument,
    organisation: Annotated[
        str, typer.Option(help="The participant the user acts for: one this node serves.")
    ],
    role: Annotated[
        str, typer.Option(help="case_worker (reads, sends), supervisor (reads, audit), read_only.")
    ],
    label: LabelOption = None,
) -> None:
    """Create a user and print their first API token (once)."""
    from trm_broker.node import users

    _check_name(name)
    chosen = _role(role)
    served = _served()
    if organisation not in served:
        typer.echo(
            f"trm-broker: this node serves {', '.join(served)}; {organisation} is not one.",
            err=True,
        )
        raise typer.Exit(2)
    now = datetime.now(UTC)
    issued = _run(lambda s: users.add_user(s, name, organisation, chosen, now, label=label))
    typer.echo(f"user {name} added: {chosen.value} of {organisation}", err=True)
    _print_token(issued)


def _role(value: str) -> Role:
    from trm_broker.node.users import Role

    try:
        return Role(value)
    except ValueError:
        typer.echo(f"trm-broker: --role is one of {', '.join(Role)}.", err=True)
        raise typer.Exit(2) from None


@users_app.command("list")
def users_list() -> None:
    """Every user: organisation, role, state, live tokens, password."""
    from trm_broker.node import users

    async def work(session: AsyncSession) -> list[str]:
        now = datetime.now(UTC)
        every = await users.tokens(session)
        lines = []
        for account in await users.users(session):
            live = sum(
                1
                for t in every
                if t.user_name == account.name and users.TokenHolder(account, t).usable(now)
            )
            state = "disabled" if account.disabled_at is not None else "active"
            password = "password" if account.password_hash else "no password"
            lines.append(
                f"{account.name}\t{account.organisation}\t{account.role.value}\t{state}\t"
                f"{live} live token(s)\t{password}\tsince {account.created_at:%Y-%m-%d}"
            )
        return lines

    lines = _run(work)
    typer.echo("\n".join(lines) if lines else "no users yet: `trm-broker node users add`")


@users_app.command("disable")
def users_disable(name: NameArgument) -> None:
    """Refuse every token of the user from now on (they stay in the audit log)."""
    from trm_broker.node import users

    now = datetime.now(UTC)
    _run(lambda s: users.disable(s, name, now))
    typer.echo(f"user {name} disabled", err=True)


@users_app.command("enable")
def users_enable(name: NameArgument) -> None:
    """Accept a disabled user's live tokens again."""
    from trm_broker.node import users

    _run(lambda s: users.enable(s, name))
    typer.echo(f"user {name} enabled", err=True)


@token_app.command("new")
def token_new(name: NameArgument, label: LabelOption = None) -> None:
    """Make another API token for the user and print it (once)."""
    from trm_broker.node import users

    now = datetime.now(UTC)
    _print_token(_run(lambda s: users.new_token(s, name, now, label=label)))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok-…), from `token list`.")],
) -> None:
    """Refuse the token from now on."""
    from trm_broker.node import users

    now = datetime.now(UTC)
    token = _run(lambda s: users.revoke_token(s, token_id, now))
    typer.echo(f"token {token.id} of {token.user_name} revoked", err=True)


@token_app.command("list")
def token_list(
    name: Annotated[str | None, typer.Argument(help="One user's; default every user's.")] = None,
) -> None:
    """Tokens by id (never their value): user, label, made, expiry, revocation."""
    from trm_broker.node import users

    async def work(session: AsyncSession) -> list[str]:
        return [
            f"{t.id}\t{t.user_name}\t{t.label or '-'}\tmade {t.created_at:%Y-%m-%d %H:%M}\t"
            + (f"expires {t.expires_at:%Y-%m-%d %H:%M}\t" if t.expires_at else "")
            + (f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "live")
            for t in await users.tokens(session, name)
        ]

    lines = _run(work)
    typer.echo("\n".join(lines) if lines else "no tokens")


@password_app.command("set")
def password_set(
    name: NameArgument,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set the user's password (hashed with argon2id), asked twice, hidden."""
    from trm_broker.node import users

    if stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run(lambda s: users.set_password(s, name, password))
    typer.echo(f"password of {name} set", err=True)
