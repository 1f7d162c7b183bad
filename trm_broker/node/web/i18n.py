"""The web app's languages: its gettext catalogs, read at start, and dates in the user's zone.

Each language is one file, ``locale/<code>/LC_MESSAGES/messages.po``, read with Babel when the
app starts (no compile step): a country adds its language by copying ``en``'s file and
translating it. The language of a request is the user's choice (the language cookie), else
the best of the browser's ``Accept-Language`` (RFC 9110 §12.5.4), else English.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, get_timezone_gmt
from babel.support import Translations

from trm_broker.web.i18n import DEFAULT, Catalogs, language_name

__all__ = ["DEFAULT", "language_name"]

LOCALE_DIR = Path(__file__).parent / "locale"
#: The language cookie: a preference, not a secret (still ``__Host-``: Secure, host-only).
COOKIE = "__Host-trm_lang"


def N_(text: str) -> str:  # gettext's conventional marker name
    """Marks ``text`` for the catalogs where it is written; it is translated where shown."""
    return text


#: The web app's catalogs, one ``.po`` file per language under ``locale/``.
CATALOGS = Catalogs(LOCALE_DIR, COOKIE)


def catalog_path(language: str) -> Path:
    return CATALOGS.path(language)


def languages() -> tuple[str, ...]:
    """The languages with a catalog, English first."""
    return CATALOGS.languages()


def translations(language: str) -> Translations:
    """The language's catalog, read from its ``.po`` file and compiled in memory."""
    return CATALOGS.translations(language)


def chosen(cookie: str | None, accept_language: str | None) -> str:
    """The request's language: the cookie's, else the browser's best, else English."""
    return CATALOGS.chosen(cookie, accept_language)


@dataclass(frozen=True)
class CodeWords:
    """A payload's code in words (``social_worker``: "Social worker"), as the forms label
    their choices, through the language's catalog (English where it has no entry)."""

    language: str

    def __call__(self, code: object) -> str:
        words = str(code).replace("_", " ").capitalize()
        return translations(self.language).gettext(words)


def language_of_tag(language: str) -> Callable[[object], str]:
    """A language tag (``pcm``, ``pt-BR``) named in ``language``, the tag itself if unknown."""

    def named(tag: object) -> str:
        try:
            found = Locale.parse(str(tag).replace("-", "_")).get_display_name(language)
        except (ValueError, LookupError, UnknownLocaleError):
            found = None
        return found or str(tag)

    return named


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name``, or UTC for none or an unknown one."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def known_zone(name: str | None) -> str | None:
    """``name`` if it is an IANA zone this machine knows, else ``None``."""
    if not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


#: The areas of the IANA zones offered (``Europe/Vienna``); not ``Etc/GMT+1`` and the like.
_AREAS = (
    "Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe", "Indian",
    "Pacific",
)  # fmt: skip


@cache
def zone_names() -> tuple[str, ...]:
    """The IANA time zones a user chooses from: ``UTC``, then every ``Area/City``."""
    found = (n for n in available_timezones() if n.split("/", 1)[0] in _AREAS and "/" in n)
    return ("UTC", *sorted(found))


def zone_label(name: str | None, language: str, at: datetime | None = None) -> str:
    """A zone named, with its offset ``at`` (now): ``Europe/Vienna (UTC+01:00)``."""
    if not name or name == "UTC" or known_zone(name) is None:
        return "UTC"
    moment = (at or datetime.now(UTC)).astimezone(ZoneInfo(name))
    return f"{name} ({get_timezone_gmt(moment, locale=language)})"


@dataclass(frozen=True)
class DateFormat:
    """Formats times for one user: their language's conventions, their time zone."""

    language: str
    time_zone: str | None

    def __call__(self, moment: datetime | str | None, width: str = "medium") -> str:
        if moment is None or moment == "":
            return ""
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        return format_datetime(moment, width, tzinfo=zone(self.time_zone), locale=self.language)

    def day(self, value: date | str | None, width: str = "medium") -> str:
        """A calendar date (a payload's ``format: date``, no zone) in the language's
        conventions; a text that is no date is shown as it is."""
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            try:
                day = date.fromisoformat(value)
            except ValueError:
                return value
        else:
            day = value
        return format_date(day, width, locale=self.language)

    def moment(self, value: object) -> str:
        """A payload's date-time in the user's zone; a text that is no time as it is."""
        try:
            return self(value if isinstance(value, datetime | str) else str(value))
        except ValueError:
            return str(value)

    @property
    def zone(self) -> str:
        """The zone the times are shown in, named (for every page's footer)."""
        return zone_label(self.time_zone, self.language)
