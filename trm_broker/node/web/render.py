"""Pages rendered with Jinja2, one environment per language, every text through gettext."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from trm_broker.node.web import i18n
from trm_broker.web.i18n import page_environment

TEMPLATES = Path(__file__).parent / "templates"
#: Where the web app's pages live at the node, and its style sheet and script.
PREFIX = "/web"
STATIC = PREFIX + "/static"


@cache
def environment(language: str) -> Environment:
    env = page_environment(TEMPLATES, i18n.translations(language))
    env.filters["code"] = i18n.CodeWords(language)
    env.filters["language"] = i18n.language_of_tag(language)
    return env


def page(
    request: Request,
    template: str,
    *,
    language: str,
    time_zone: str | None = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """``template`` rendered in ``language``, with what every page's layout needs."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    values: dict[str, Any] = {
        "lang": language,
        "languages": [(code, i18n.language_name(code)) for code in i18n.languages()],
        "here": here,
        "prefix": PREFIX,
        "static": STATIC,
        "when": i18n.DateFormat(language, time_zone),
        "visitor": None,
        **context,
    }
    html = environment(language).get_template(template).render(values)
    return HTMLResponse(html, status_code=status)
