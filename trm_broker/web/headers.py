"""The headers every page of the web apps carries (the node's web app under ``/web``, the
broker's auditors' console under ``/console``): a strict Content-Security-Policy (W3C CSP
Level 3: nothing but the server's own script, style and images; no framing; forms post to
the server only), no MIME sniffing, no referrer, and no caching of pages that hold case data."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class PageHeaders:
    """Adds :data:`PAGE_HEADERS` to every answer under ``prefix``, and ``Cache-Control:
    no-store`` to all but the static files (pages show case data, and a shared computer's
    back button must not show them after sign-out)."""

    def __init__(self, app: ASGIApp, prefix: str, static: str) -> None:
        self.app = app
        self.prefix = prefix
        self.static = static

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers[name] = value
                if not path.startswith(self.static + "/"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, sending)
