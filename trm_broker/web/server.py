"""Serving an app with uvicorn, with a deadline on request headers against slow clients.

uvicorn closes idle keep-alive connections, but has no limit on how long a client may take
to send a request's headers: a client sending one byte a second (slowloris) holds its
connection forever. :func:`header_timeout_protocol` is uvicorn's own HTTP/1.1 protocol
(httptools, on uvloop: the fastest uvicorn offers)
with that deadline: from the connection's start, and again after each response, the
headers must be complete within ``seconds``, or the server answers 408 and closes. The
body then has TRM_BODY_TIMEOUT_SECONDS (:mod:`trm_broker.web.limits`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from trm_broker.settings import Settings
from trm_broker.web.problems import PROBLEM_BASE

log = structlog.get_logger("trm_broker.server")

STARTUP_FAILURE = 3  # uvicorn's exit status when the server could not start


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {
            "type": PROBLEM_BASE + "request-timeout",
            "title": "The request was not received in time",
            "status": 408,
            "detail": f"The request headers did not arrive within {seconds:g} seconds.",
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def header_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing connections whose request headers take too long."""
    response = _timeout_response(seconds)

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            # Armed while a request's headers are awaited, disarmed once they are in.
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # A pipelined request waiting to start has its headers in already.
            if not self.transport.is_closing() and not self.pipeline:
                self._arm()  # the next request's headers have the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def config(app: Any, host: str, port: int, settings: Settings) -> uvicorn.Config:
    """How every `trm-broker` server runs: the broker, its worker and the node."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_timeout_protocol(settings.header_timeout_seconds),
        loop="auto",  # uvloop where it is installed (every platform but Windows)
        log_config=None,
        access_log=False,
        server_header=False,
    )


def run(app: Any, host: str, port: int, settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; a start-up failure (port taken, lifespan refused) exits 3
    as ``uvicorn.run`` does."""
    server = uvicorn.Server(config(app, host, port, settings))
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run_processes(
    make_app: Callable[[], Any], host: str, port: int, settings: Settings, count: int
) -> None:
    """Serve from ``count`` processes sharing one listening socket, so that the app uses
    more than one core. The socket is bound here, then each process is forked and builds
    its own app (its own event loop, database pool and background loops). A process that
    ends unexpectedly is replaced; SIGTERM or SIGINT stops them all, each finishing the
    requests it has in flight. Exits 3 if a process could not start."""
    sock = config(None, host, port, settings).bind_socket()
    children: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the child: serve until told to stop, then leave without cleanup
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            server = uvicorn.Server(config(make_app(), host, port, settings))
            server.run(sockets=[sock])
            os._exit(0 if server.started else STARTUP_FAILURE)
        children.add(pid)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(count):
        spawn()
    log.info("processes_started", processes=count)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # pragma: no cover - none left
            break
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if code == STARTUP_FAILURE:
            failed = True
            stop(signal.SIGTERM, None)
            continue
        log.warning("process_ended", exit_code=code)
        time.sleep(1)  # a process that dies at once is not restarted in a tight loop
        if not stopping:
            spawn()
    sock.close()
    if failed:
        sys.exit(STARTUP_FAILURE)
