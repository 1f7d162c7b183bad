"""Limits on every request body, before any route sees it: size, time and JSON depth.

:class:`BodyLimits` is ASGI middleware on the broker and the node alike. It reads the
whole body first (bodies are small: an envelope is at most TRM_MAX_ENVELOPE_BYTES) and
refuses, without parsing anything:

- a body larger than the limit, as soon as that is known (413);
- a body not received within TRM_BODY_TIMEOUT_SECONDS of the headers (408): a slow
  client cannot hold a worker;
- a JSON body nested deeper than TRM_MAX_JSON_DEPTH (400), found by a linear scan.

The route then reads the same bytes, from memory.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from itertools import accumulate

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trm_broker.settings import Settings
from trm_broker.web.problems import Problem, RequestTimeout, TooDeep, TooLarge, send_problem

#: A JSON string, escapes included: brackets inside strings do not nest anything. Written
#: as runs of plain characters between escapes ("unrolled"), not one alternation per
#: character: six times faster on a signed envelope's long base64 strings.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (0: a scalar), without
    parsing it. Malformed JSON gets a number too; the parser refuses it afterwards."""
    brackets = _STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, *accumulate(map(_STEP.__getitem__, brackets)))


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.endswith("/json") or media.endswith("+json")


class BodyLimits:
    """ASGI middleware enforcing ``max_bytes``, ``timeout`` and ``max_depth`` on bodies."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout: float,
        max_depth: int,
        wider: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Paths (a POST of a file) that take larger bodies: the route bounds the file itself.
        self.wider = tuple(wider)
        self.timeout = timeout
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = next(
            (most for path, most in self.wider if path.fullmatch(scope.get("path", ""))),
            self.max_bytes,
        )
        try:
            body, disconnect = await self._read(headers, receive, limit)
            if _is_json(headers.get("content-type", "")) and json_depth(body) > self.max_depth:
                raise TooDeep(
                    f"The JSON is nested more than {self.max_depth} levels deep; no message "
                    "of this API needs that."
                )
        except Problem as problem:
            await send_problem(problem, scope, receive, send)
            return
        await self.app(scope, _replay(body, disconnect, receive), send)

    async def _read(
        self, headers: dict[str, str], receive: Receive, limit: int
    ) -> tuple[bytes, Message | None]:
        """The body, and the disconnect message if the client left before sending it all."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return b"".join(chunks), message  # the client went away
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise self._too_large(limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks), None
        except TimeoutError:
            raise RequestTimeout(
                f"The body did not arrive within {self.timeout:g} seconds; send it at once."
            ) from None

    def _too_large(self, limit: int) -> TooLarge:
        return TooLarge(f"The body is larger than {limit} bytes; large files travel by reference.")


def _replay(body: bytes, disconnect: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then what the client sends next."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if disconnect is not None:
        pending.append(disconnect)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def install(
    app: Starlette, settings: Settings, wider: Sequence[tuple[re.Pattern[str], int]] = ()
) -> None:
    """Put :class:`BodyLimits` in front of ``app``'s routes, with the configured limits
    (``wider``: paths that take a file, and their own limit)."""
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_envelope_bytes,
        timeout=settings.body_timeout_seconds,
        max_depth=settings.max_json_depth,
        wider=wider,
    )
