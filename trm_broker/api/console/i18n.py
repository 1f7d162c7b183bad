"""The console's languages: the page apps' catalogs (:mod:`trm_broker.web.i18n`), and times
in the reader's language, in UTC (the ledger's own zone)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from babel.dates import format_datetime

from trm_broker.web.i18n import Catalogs, language_name

__all__ = ["Catalogs", "DateFormat", "language_name"]


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
