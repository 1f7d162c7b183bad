"""Pages rendered with Jinja2, one environment per language, every text through gettext.

:class:`Pages` is the node's web app's way (node/web/render.py) with the templates, catalogs
and URL prefix as parameters, so the two apps can later share one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from trm_broker.api.console.i18n import Catalogs, DateFormat, language_name
from trm_broker.web.i18n import page_environment


@dataclass
class Pages:
    templates: Path
    catalogs: Catalogs
    #: Where the pages live, and their style sheet and scripts.
    prefix: str
    static: str
    _environments: dict[str, Environment] = field(default_factory=dict, repr=False)

    def environment(self, language: str) -> Environment:
        if language not in self._environments:
            env = page_environment(self.templates, self.catalogs.translations(language))
            self._environments[language] = env
        return self._environments[language]

    def language_of(self, request: Request) -> str:
        return self.catalogs.chosen(
            request.cookies.get(self.catalogs.cookie), request.headers.get("accept-language")
        )

    def page(
        self,
        request: Request,
        template: str,
        *,
        language: str | None = None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """``template`` rendered in ``language`` (default: the request's), with what every
        page's layout needs."""
        lang = language or self.language_of(request)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        values: dict[str, Any] = {
            "lang": lang,
            "languages": [(code, language_name(code)) for code in self.catalogs.languages()],
            "here": here,
            "prefix": self.prefix,
            "static": self.static,
            "when": DateFormat(lang),
            "visitor": None,
            **context,
        }
        html = self.environment(lang).get_template(template).render(values)
        return HTMLResponse(html, status_code=status)
