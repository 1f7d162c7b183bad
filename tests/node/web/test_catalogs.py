"""Every text of the web app is in every language's catalog, translated: a string of a
template, of a payload schema's form (labels, help texts, choices) or marked in the app's
Python (``gettext``/``N_``) missing from English or French (or from a language added
later) fails here, and so does a catalog entry none of them has any more. The catalogs are
read from their `.po` files at start: there is nothing to compile."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS
from trm_broker.node.web import forms, i18n, render
from trm_broker.web.i18n import SHARED_TEMPLATES

_REFERRAL = MessageType.REFERRAL
_METHODS = [("**.html", "jinja2.ext:babel_extract")]
_OPTIONS = {
    "**.html": {
        "extensions": "jinja2.ext.i18n",
        "trim_blocks": "true",
        "lstrip_blocks": "true",
        "newstyle_gettext": "true",
    }
}


def template_messages(
    folders: tuple[Path, ...] = (render.TEMPLATES, SHARED_TEMPLATES),
) -> set[str | tuple[str, ...]]:
    """The texts of an app's templates: its own and the layout both apps share."""
    found: set[str | tuple[str, ...]] = set()
    for folder in folders:
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(folder), _METHODS, _OPTIONS
        ):
            found.add(tuple(message) if isinstance(message, list | tuple) else message)
    return found


#: The Python of the web app: texts marked where they are written, translated where shown.
_PYTHON = Path(render.__file__).parent
_KEYWORDS = {"gettext": None, "N_": None, "_": None, "ngettext": (1, 2)}


def python_messages(folder: Path = _PYTHON) -> set[str | tuple[str, ...]]:
    found: set[str | tuple[str, ...]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(folder), [("*.py", "python")], keywords=_KEYWORDS
    ):
        found.add(tuple(message) if isinstance(message, list | tuple) else message)
    return found


def app_messages() -> set[str | tuple[str, ...]]:
    """Every text the app translates: templates, schema forms, marked Python."""
    return template_messages() | forms.schema_messages() | python_messages()


def _catalog(language: str) -> dict[object, object]:
    with Path(i18n.catalog_path(language)).open("rb") as po:
        catalog = read_po(po, locale=language)
    return {message.id: message.string for message in catalog if message.id and not message.fuzzy}


def test_english_and_french_are_served() -> None:
    assert i18n.languages()[0] == "en"
    assert {"en", "fr"} <= set(i18n.languages())


@pytest.mark.parametrize("language", i18n.languages())
def test_every_string_of_the_app_is_translated_in_the_catalog(language: str) -> None:
    assert len(template_messages()) > 100  # the extraction found the templates' texts
    assert len(forms.schema_messages()) > 200  # ... the schemas' texts
    assert "Fill this in." in python_messages()  # ... and the Python's marked texts
    wanted = app_messages()
    translated = _catalog(language)
    # Babel keys a plural message by its singular and plural ids, as extraction does.
    missing = sorted(str(m) for m in wanted if not _filled(translated.get(m)))
    assert not missing, f"{language}: not translated: {missing}"
    stale = sorted(str(k) for k in translated if k not in wanted)
    assert not stale, f"{language}: no longer in the app: {stale}"
    # And it loads as the app loads it, and answers in the language.
    loaded = i18n.translations(language)
    sample = "Sign in"
    assert loaded.gettext(sample) == translated[sample]


def _filled(value: object) -> bool:
    if isinstance(value, tuple | list):
        return bool(value) and all(value)
    return bool(value)


@pytest.mark.parametrize("language", i18n.languages())
def test_every_field_of_every_payload_form_has_a_translated_label(language: str) -> None:
    """A member added to a payload schema without its words in every catalog fails here,
    naming the message type and the member: a schema change never leaves a form behind."""
    translated = _catalog(language)
    untranslated = []
    for message_type in PAYLOAD_MODELS:
        for spec in forms.walk(forms.form_spec(message_type)):
            texts = [spec.label, *([spec.help] if spec.help else [])]
            if spec.path[-1] not in ("nationality", "destination_country"):
                texts += [c.label for c in spec.choices]
            for text in texts:
                if not _filled(translated.get(text)):
                    untranslated.append(f"{message_type.value}: {'.'.join(spec.path)}: {text}")
    assert not untranslated, f"{language}: {untranslated}"


def test_a_french_user_reads_the_referral_form_in_french() -> None:
    gettext = i18n.translations("fr").gettext
    specs = {".".join(s.path): s for s in forms.walk(forms.form_spec(_REFERRAL, gettext, "fr"))}
    assert specs["person.given_name"].label == "Prénom"
    assert specs["person.nationality"].label == "Nationalité"
    assert {c.label for c in specs["person.gender"].choices} >= {"Femme", "Homme"}
    assert specs["destination_country"].help is not None
    assert "focal" in specs["destination_country"].help
    # Countries come from Babel's names in the language, not from the catalog.
    countries = {c.value: c.label for c in specs["destination_country"].choices}
    assert countries["DE"] == "Allemagne"
