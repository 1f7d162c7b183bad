"""The console's languages: gettext catalogs read from ``.po`` files at start (no compile step),
the request's language, and dates in the reader's language.

Written as the node's web app does it (node/web/i18n.py), but parametrised by the folder of
catalogs and the cookie, so both apps can share it once node/web moves onto it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

DEFAULT = "en"


@dataclass
class Catalogs:
    """The catalogs ``<folder>/<code>/LC_MESSAGES/messages.po``; ``cookie`` holds a choice."""

    folder: Path
    cookie: str
    _compiled: dict[str, Translations] = field(default_factory=dict, repr=False)

    def path(self, language: str) -> Path:
        return self.folder / language / "LC_MESSAGES" / "messages.po"

    def languages(self) -> tuple[str, ...]:
        """The languages with a catalog, English first."""
        found = sorted(p.name for p in self.folder.iterdir() if self.path(p.name).is_file())
        return tuple(sorted(found, key=lambda code: code != DEFAULT))

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


@dataclass(frozen=True)
class DateFormat:
    """Formats times in the reader's language, in UTC (the ledger's own zone)."""

    language: str

    def __call__(self, moment: datetime | str | None, width: str = "medium") -> str:
        if moment is None or moment == "":
            return ""
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        return format_datetime(moment, width, tzinfo=UTC, locale=self.language) + " UTC"
