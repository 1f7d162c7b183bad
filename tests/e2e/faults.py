"""A faulty inbox for e2e tests: an HTTP/1.1 server on loopback, placed between the broker and
a real node, that misbehaves on purpose.

The broker pushes to ``FaultyInbox.url + "/inbox"``. Each push is handled in the mode set for
its envelope's ``case_ref`` (``modes``), or ``default_mode``; modes can change at any time:

- ``pass``: forward the push verbatim to the node and return its answer verbatim.
- ``timeout``: read the push, then hold the connection open longer than the broker waits.
- ``reset``: read the push, then reset the TCP connection (RST: SO_LINGER 0, then abort).
- ``http_500``: answer 500 without forwarding.
- ``malformed``: answer 200 with a body that is not JSON.
- ``oversized``: answer 200 with a body larger than any acknowledgement may be.
- ``bad_signature``: forward, then return the node's ack with one signature byte changed.
- ``wrong_message``: forward, then return the node's (valid) ack of another message.
- ``wrong_signer``: forward, then return the node's ack claims signed with another
  registered participant's key (``other_signer``).

Forwarding keeps every header the broker's RFC 9421 signature needs (``content-digest``,
``signature-input``, ``signature``); the node must be started with TRM_NODE_PUBLIC_URL set to
``FaultyInbox.url`` so that its check of ``@target-uri`` sees the URL the broker signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from trm_broker.crypto import jws
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.keys import SigningKey

MODES = (
    "pass",
    "timeout",
    "reset",
    "http_500",
    "malformed",
    "oversized",
    "bad_signature",
    "wrong_message",
    "wrong_signer",
)
_HOP_BY_HOP = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "accept-encoding",
}
_REASONS = {200: "OK", 400: "Bad Request", 500: "Internal Server Error", 502: "Bad Gateway"}


@dataclass
class Push:
    """One push as the proxy saw it, and what it did with it."""

    mode: str
    message_id: str
    case_ref: str
    forwarded: bool = False
    node_status: int | None = None
    answered: int | None = None  # the status returned to the broker (None: none returned)
    genuine_ack: bool = False  # the node's own 200 answer was passed back unchanged


@dataclass
class FaultyInbox:
    """Start with ``with FaultyInbox(hold_seconds=...) as proxy:``; set ``upstream`` (the
    node's inbox URL) before the first push that needs forwarding."""

    hold_seconds: float
    upstream: str | None = None
    default_mode: str = "pass"
    modes: dict[str, str] = field(default_factory=dict)
    other_signer: SigningKey | None = None
    pushes: list[Push] = field(default_factory=list)
    acks: dict[str, dict[str, str]] = field(default_factory=dict)  # message_id -> node's ack
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _client: httpx.AsyncClient | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyInbox:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="faulty-inbox", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start(self) -> None:
        self._client = httpx.AsyncClient(timeout=30)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # --- what the test reads ---------------------------------------------------------------

    def set_mode(self, case_ref: str, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode}")
        self.modes[case_ref] = mode

    def pushes_of(self, case_ref: str) -> list[Push]:
        with self._lock:
            return [p for p in self.pushes if p.case_ref == case_ref]

    def modes_seen(self, case_ref: str) -> Counter[str]:
        return Counter(p.mode for p in self.pushes_of(case_ref))

    # --- the server ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the broker gave up on this connection (e.g. its timeout)
        finally:
            if task is not None:
                self._handlers.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = [
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in header_lines if line)
        ]
        length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
        body = await reader.readexactly(length)
        message_id, case_ref = _identify(body)
        mode = self.modes.get(case_ref, self.default_mode)
        push = Push(mode, message_id, case_ref)
        with self._lock:
            self.pushes.append(push)

        if mode == "timeout":
            await asyncio.sleep(self.hold_seconds)
            return  # close without an answer; the broker stopped waiting long ago
        if mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if mode == "http_500":
            await _respond(writer, push, 500, b'{"detail":"injected fault"}')
            return
        if mode == "malformed":
            await _respond(writer, push, 200, b'{"ack": not json')
            return
        if mode == "oversized":
            await _respond(writer, push, 200, b'{"ack":"' + b"A" * (128 * 1024) + b'"}')
            return

        status, answer = await self._forward(method, path, headers, body, push)
        if status != 200 or mode == "pass":
            push.genuine_ack = status == 200 and mode == "pass"
            await _respond(writer, push, status, answer)
            return
        ack: dict[str, str] = json.loads(answer)["ack"]
        if mode == "bad_signature":
            ack = {**ack, "signature": _flip(ack["signature"])}
        elif mode == "wrong_message":
            others = [a for mid, a in self.acks.items() if mid != message_id]
            if not others:
                raise RuntimeError("wrong_message needs an ack of another message first")
            ack = others[0]
        elif mode == "wrong_signer":
            if self.other_signer is None:
                raise RuntimeError("wrong_signer needs other_signer")
            claims = jws.parse(ack, jws.TYP_ACK).claims()
            ack = jws.sign(claims, self.other_signer, jws.TYP_ACK)
        await _respond(writer, push, 200, json.dumps({"ack": ack}).encode())

    async def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, push: Push
    ) -> tuple[int, bytes]:
        if self.upstream is None or self._client is None:
            return 502, b'{"detail":"no upstream"}'
        kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
        target = self.upstream.rstrip("/") + path.removeprefix("/inbox")
        response = await self._client.request(method, target, headers=kept, content=body)
        push.forwarded = True
        push.node_status = response.status_code
        if response.status_code == 200:
            with self._lock:
                self.acks.setdefault(push.message_id, response.json()["ack"])
        return response.status_code, response.content


def _identify(body: bytes) -> tuple[str, str]:
    """The pushed envelope's message id and case reference (its signed claims, unverified)."""
    try:
        envelope: Any = json.loads(body)["envelope"]
        claims = json.loads(b64url_decode(envelope["payload"]))
        return str(claims["id"]), str(claims["case_ref"])
    except (ValueError, KeyError, TypeError):
        return "?", "?"


def _flip(signature: str) -> str:
    """Change one character in the middle (the last one may only carry padding bits)."""
    i = len(signature) // 2
    return signature[:i] + ("B" if signature[i] == "A" else "A") + signature[i + 1 :]


async def _respond(writer: asyncio.StreamWriter, push: Push, status: int, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    push.answered = status
    writer.write(head.encode("latin-1") + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
