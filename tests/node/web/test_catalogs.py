"""Every text of the web app's templates is in every language's catalog, translated: a
template string missing from English or French (or from a language added later) fails here.
The catalogs are read from their `.po` files at start: there is nothing to compile."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from trm_broker.node.web import i18n, render

_METHODS = [("**.html", "jinja2.ext:babel_extract")]
_OPTIONS = {
    "**.html": {
        "extensions": "jinja2.ext.i18n",
        "trim_blocks": "true",
        "lstrip_blocks": "true",
        "newstyle_gettext": "true",
    }
}


def template_messages() -> set[str | tuple[str, ...]]:
    found: set[str | tuple[str, ...]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(render.TEMPLATES), _METHODS, _OPTIONS
    ):
        found.add(tuple(message) if isinstance(message, list | tuple) else message)
    return found


def test_english_and_french_are_served() -> None:
    assert i18n.languages()[0] == "en"
    assert {"en", "fr"} <= set(i18n.languages())


@pytest.mark.parametrize("language", i18n.languages())
def test_every_template_string_is_translated_in_the_catalog(language: str) -> None:
    with Path(i18n.catalog_path(language)).open("rb") as po:
        catalog = read_po(po, locale=language)
    wanted = template_messages()
    assert len(wanted) > 100  # the extraction found the templates' texts
    translated = {
        message.id: message.string for message in catalog if message.id and not message.fuzzy
    }
    # Babel keys a plural message by its singular and plural ids, as extraction does.
    missing = sorted(str(m) for m in wanted if not _filled(translated.get(m)))
    assert not missing, f"{language}: not translated: {missing}"
    stale = sorted(str(k) for k in translated if k not in wanted)
    assert not stale, f"{language}: no longer in any template: {stale}"
    # And it loads as the app loads it, and answers in the language.
    loaded = i18n.translations(language)
    sample = "Sign in"
    assert loaded.gettext(sample) == translated[sample]


def _filled(value: object) -> bool:
    if isinstance(value, tuple | list):
        return bool(value) and all(value)
    return bool(value)
