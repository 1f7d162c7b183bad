"""Every text of the auditors' console is in every language's catalog, translated: a string
of its templates (and of the layout it shares with the node's web app) or marked in its
Python missing from English or French fails here, and so does an entry none of them has."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tests.node.web.test_catalogs import python_messages, template_messages
from trm_broker.api.console import render
from trm_broker.api.console.visitor import PAGES
from trm_broker.web.i18n import SHARED_TEMPLATES

_HERE = Path(render.__file__).parent


def console_messages() -> set[str | tuple[str, ...]]:
    return template_messages((_HERE / "templates", SHARED_TEMPLATES)) | python_messages(_HERE)


def test_english_and_french_are_served() -> None:
    assert PAGES.catalogs.languages()[0] == "en"
    assert {"en", "fr"} <= set(PAGES.catalogs.languages())


@pytest.mark.parametrize("language", PAGES.catalogs.languages())
def test_every_string_of_the_console_is_translated(language: str) -> None:
    wanted = console_messages()
    assert len(wanted) > 50  # the extraction found the console's texts
    with PAGES.catalogs.path(language).open("rb") as po:
        catalog = read_po(po, locale=language)
    translated = {m.id: m.string for m in catalog if m.id and not m.fuzzy}

    def filled(value: object) -> bool:
        return bool(value) and (not isinstance(value, tuple | list) or all(value))

    missing = sorted(str(m) for m in wanted if not filled(translated.get(m)))
    assert not missing, f"{language}: not translated: {missing}"
    stale = sorted(str(k) for k in translated if k not in wanted)
    assert not stale, f"{language}: no longer in the console: {stale}"
