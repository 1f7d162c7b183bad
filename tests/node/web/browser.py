"""A browser's part in the web app's tests: cookies kept as a browser keeps them (only
``Secure`` ones, over the node's https address), forms posted with their CSRF token, and the
node world of the access matrix with passwords for its users."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.harness import node_database
from tests.security.node_access_world import USERS, NodeWorld, node_world
from tests.support import broker_settings, running_broker
from trm_broker.node import users
from trm_broker.store.database import create_engine, session_factory

PASSWORD = "a long passphrase 4 tests"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str | bool]


@dataclass
class Browser:
    """One browser: its cookies, sent back as a browser would."""

    node: httpx.AsyncClient
    language: str = "en"
    cookies: dict[str, str] = field(default_factory=dict)
    last_set: dict[str, SetCookie] = field(default_factory=dict)

    async def get(self, path: str, **headers: str) -> httpx.Response:
        return self._kept(await self.node.get(path, headers=self._headers(headers)))

    async def post(self, path: str, form: dict[str, str], **headers: str) -> httpx.Response:
        response = await self.node.post(path, data=form, headers=self._headers(headers))
        return self._kept(response)

    async def upload(
        self,
        path: str,
        form: dict[str, str | list[str]],
        files: dict[str, tuple[str, bytes, str]],
        **headers: str,
    ) -> httpx.Response:
        """A ``multipart/form-data`` form with files, as a browser sends one."""
        response = await self.node.post(
            path, data=form, files=files, headers=self._headers(headers)
        )
        return self._kept(response)

    async def sign_in(self, user: str, password: str = PASSWORD) -> httpx.Response:
        form = await self.get("/web/sign-in")
        return await self.post(
            "/web/sign-in",
            {"csrf_token": csrf_token(form.text), "user": user, "password": password},
        )

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"accept-language": self.language, **extra}
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _kept(self, response: httpx.Response) -> httpx.Response:
        for header in response.headers.get_list("set-cookie"):
            parsed = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                attributes: dict[str, str | bool] = {
                    k: v for k, v in morsel.items() if v not in ("", False)
                }
                self.last_set[name] = SetCookie(name, morsel.value, attributes)
                gone = morsel["max-age"] == "0" or not morsel.value or morsel.value == '""'
                if gone:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response


def csrf_token(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def https_client(world: NodeWorld) -> httpx.AsyncClient:
    """A client of the world's node app at an https address (Secure cookies)."""
    transport = world.node._transport  # the node's own app, in-process
    return httpx.AsyncClient(transport=transport, base_url="https://node.example")


#: PASSWORD's argon2id hash, made once per test process by ``users.set_password``: a hash
#: costs about 0.2 s by design, and the world has eight users in every web test.
_hashed: list[str] = []


async def set_passwords(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            for name in USERS:
                account = await users.user(session, name)
                assert account is not None, name
                if not _hashed:
                    await users.set_password(session, name, PASSWORD)
                    assert account.password_hash is not None
                    _hashed.append(account.password_hash)
                account.password_hash = _hashed[0]  # salted inside: valid for any user
            await session.commit()
    finally:
        await engine.dispose()


@asynccontextmanager
async def web_world(
    request: pytest.FixtureRequest,
    database_url: str,
    backend: str,
    tmp_path: Path,
    **overrides: Any,
) -> AsyncIterator[tuple[NodeWorld, httpx.AsyncClient]]:
    """The access matrix's node world (tests/security/node_access_world.py), with the
    node's database on the test's backend and a password for every user."""
    node_db = node_database(request, tmp_path, backend)
    async with (
        running_broker(broker_settings(database_url, tmp_path)) as broker,
        node_world(broker, tmp_path, database=node_db, **overrides) as world,
    ):
        await set_passwords(world.database_url)
        async with https_client(world) as client:
            yield world, client
