"""The page apps' languages (the node's web app, the broker's console): gettext catalogs read
from ``.po`` files at start (no compile step), and the language of a request.

Each language is one file, ``<folder>/<code>/LC_MESSAGES/messages.po``, read with Babel when
first needed: a country adds its language by copying ``en``'s file and translating it. The
language of a request is the visitor's choice (the app's language cookie), else the best of
the browser's ``Accept-Language`` (RFC 9110 §12.5.4), else English.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

DEFAULT = "en"
#: The layout both page apps' templates extend (``page.html``).
SHARED_TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Catalogs:
    """The catalogs ``<folder>/<code>/LC_MESSAGES/messages.po``; ``cookie`` holds a choice."""

    folder: Path
    cookie: str
    _compiled: dict[str, Translations] = field(default_factory=dict, repr=False)
    _languages: tuple[str, ...] = field(default=(), repr=False)

    def path(self, language: str) -> Path:
        return self.folder / language / "LC_MESSAGES" / "messages.po"

    def languages(self) -> tuple[str, ...]:
        """The languages with a catalog, English first."""
        if not self._languages:
            found = sorted(p.name for p in self.folder.iterdir() if self.path(p.name).is_file())
            self._languages = tuple(sorted(found, key=lambda code: code != DEFAULT))
        return self._languages

    def translations(self, language: str) -> Translations:
        """The language's catalog, read from its ``.po`` file and compiled in memory."""
        if language not in self._compiled:
            with self.path(language).open("rb") as po:
                catalog = read_po(po, locale=language)
            compiled = io.BytesIO()
            write_mo(compiled, catalog)
            compiled.seek(0)
            self._compiled[language] = Translations(fp=compiled)
        return self._compiled[language]

    def chosen(self, cookie: str | None, accept_language: str | None) -> str:
        """The cookie's language, else the browser's best (RFC 9110 §12.5.4), else English."""
        served = self.languages()
        if cookie in served:
            return str(cookie)
        for code in accepted(accept_language or ""):
            primary = code.split("-", 1)[0].lower()
            if primary in served:
                return primary
        return DEFAULT


def language_name(language: str) -> str:
    """The language's own name for itself (``français``), for the switcher."""
    name = Locale.parse(language).get_display_name(language) or language
    return name[:1].upper() + name[1:]


def accepted(header: str) -> list[str]:
    """``Accept-Language`` ranges by weight, highest first (``*`` and ``q=0`` left out)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:32]):
        code, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if code and code != "*" and weight > 0:
            ranked.append((-weight, position, code.strip()))
    return [code for _, _, code in sorted(ranked)]


def page_environment(templates: Path, translations: Translations) -> Environment:
    """The Jinja2 environment of a page app's templates in one language: its own folder,
    then the shared layout; autoescaped, strict about undefined names."""
    env = Environment(
        loader=FileSystemLoader([templates, SHARED_TEMPLATES]),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    return env
