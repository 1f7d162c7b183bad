"""`trm-broker node users`: accounts per organisation, tokens shown once and revocable, and
the node taking (then refusing) them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from tests.node.harness import node_settings, rows, running_node
from trm_broker.cli import app
from trm_broker.crypto.keys import KeySet
from trm_broker.node.users import NodeUser, NodeUserToken
from trm_broker.settings import get_settings

NAPTIP = KeySet.generate("ng.naptip")
SHELTER = KeySet.generate("ng.shelter")


@pytest.fixture
def node_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The node's settings in the environment, as on its host; the database's URL."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    files = node_settings(tmp_path, [NAPTIP, SHELTER], database).node_key_files
    monkeypatch.setenv("TRM_NODE_DATABASE_URL", database)
    monkeypatch.setenv("TRM_NODE_KEY_FILES", ",".join(map(str, files)))
    get_settings.cache_clear()
    yield database
    get_settings.cache_clear()


def users(*arguments: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["node", "users", *arguments], input=stdin)


def status(database: str, tmp_path: Path, token: str) -> int:
    """What the node answers the token on `GET /messages`."""

    async def call() -> int:
        settings = node_settings(tmp_path, [NAPTIP, SHELTER], database, node_api_token=None)
        async with running_node(settings, httpx.AsyncClient()) as node:
            response = await node.get("/messages", headers={"authorization": f"Bearer {token}"})
            return response.status_code

    return asyncio.run(call())


def test_a_user_is_added_with_a_token_shown_once_that_the_node_takes_until_revoked(
    node_env: str, tmp_path: Path
) -> None:
    added = users("add", "ada.okafor", "--organisation", "ng.shelter", "--role", "case_worker")
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()  # alone on stdout, for TOKEN=$(…)
    assert token.startswith("trmu_")
    assert "\n" not in token
    assert "case_worker of ng.shelter" in added.stderr

    second = users("token", "new", "ada.okafor", "--label", "laptop")
    assert second.exit_code == 0, second.output
    listed = users("list")
    assert "ada.okafor\tng.shelter\tcase_worker\tactive\t2 live token(s)" in listed.stdout
    tokens = users("token", "list", "ada.okafor")
    assert token not in tokens.stdout
    assert second.stdout.strip() not in tokens.stdout
    stored = json.dumps(asyncio.run(rows(node_env, NodeUserToken)), default=str)
    assert token not in stored  # only its digest

    assert status(node_env, tmp_path, token) == 200
    first_id = tokens.stdout.split("\t", 1)[0]
    assert users("token", "revoke", first_id).exit_code == 0
    assert status(node_env, tmp_path, token) == 401
    assert status(node_env, tmp_path, second.stdout.strip()) == 200  # the other still works
    assert users("disable", "ada.okafor").exit_code == 0
    assert status(node_env, tmp_path, second.stdout.strip()) == 401
    assert "disabled" in users("list").stdout


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--organisation", "ng.elsewhere", "--role", "case_worker"], "this node serves"),
        (["--organisation", "ng.shelter", "--role", "boss"], "--role is one of"),
    ],
)
def test_a_user_of_an_organisation_or_role_the_node_does_not_know_is_refused(
    node_env: str, arguments: list[str], says: str
) -> None:
    result = users("add", "bo", *arguments)
    assert result.exit_code == 2
    assert says in result.stderr
    assert "no users yet" in users("list").stdout


@pytest.mark.parametrize("name", ["admin", "Ada", "a b", "", "x" * 65])
def test_user_names_are_plain_and_admin_is_reserved(node_env: str, name: str) -> None:
    result = users("add", name, "--organisation", "ng.shelter", "--role", "read_only")
    assert result.exit_code == 2
    assert "no users yet" in users("list").stdout


def test_a_password_is_set_and_kept_as_an_argon2id_hash(node_env: str) -> None:
    users("add", "ada", "--organisation", "ng.naptip", "--role", "supervisor")
    short = users("password", "set", "ada", "--stdin", stdin="short\n")
    assert short.exit_code == 1
    assert "at least 12" in short.stderr
    done = users("password", "set", "ada", "--stdin", stdin="a long enough passphrase\n")
    assert done.exit_code == 0, done.output
    (account,) = asyncio.run(rows(node_env, NodeUser))
    assert account["password_hash"].startswith("$argon2id$")
    assert "passphrase" not in account["password_hash"]
    missing = users("password", "set", "nobody", "--stdin", stdin="a long enough passphrase\n")
    assert missing.exit_code == 1
    assert "users list" in missing.stderr


def test_the_command_prints_the_token_alone_on_stdout_on_a_new_database(
    node_env: str, tmp_path: Path
) -> None:
    """As an administrator's script runs it (TOKEN=$(trm-broker node users add …)), in its
    own process, on a database the command creates and upgrades first: the upgrade's log
    line goes to stderr, never into the token."""
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "trm_broker.cli",
            "node",
            "users",
            "add",
            "ada",
            "--organisation",
            "ng.naptip",
            "--role",
            "case_worker",
        ],
        env={**os.environ, "TRM_NODE_API_TOKEN": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("trmu_")
    assert made.stdout.count("\n") == 1
    assert "node_schema_upgraded" in made.stderr
    assert status(node_env, tmp_path, made.stdout.strip()) == 200
