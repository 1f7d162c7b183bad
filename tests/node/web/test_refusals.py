"""Refusals in the user's language: every rule of the workflow and of the consent check has
a catalog sentence saying what to fix, with the rule's facts (its window) in the language;
a code without one is shown as the problem's English text, marked as English."""

from __future__ import annotations

import pytest

from trm_broker.domain import workflow
from trm_broker.node.web import i18n, refusals
from trm_broker.web.problems import PROBLEM_BASE

FRENCH = i18n.translations("fr").gettext


def test_every_workflow_rule_has_a_sentence() -> None:
    assert set(refusals.RULE_SENTENCES) == set(workflow.RULES)


@pytest.mark.parametrize("rule", sorted(workflow.RULES))
def test_every_workflow_rule_is_said_in_french(rule: str) -> None:
    said = refusals.rule_sentence(rule, 72 * 3600, FRENCH, "fr")
    assert said is not None
    assert said.lang == "fr"
    assert said.sentence != refusals.RULE_SENTENCES[rule]  # translated, not English
    assert "%(" not in said.sentence
    if "{span}" in workflow.RULES[rule]:
        assert "72\u00a0heures" in said.sentence  # a no-break space, as French writes it


def test_a_refused_return_without_a_recent_assessment_says_what_to_do_in_french() -> None:
    detail = workflow.RULES["return_preparation_needs_recent_recommending_risk_assessment"].format(
        span="30 days", why="the latest is older"
    )
    problem = {
        "type": PROBLEM_BASE + "broker-refused",
        "title": "The broker refused the message",
        "detail": f"broker answered 409: {detail}",
        "rule": "return_preparation_needs_recent_recommending_risk_assessment",
        "window_seconds": 30 * 86400,
        "broker_problem": PROBLEM_BASE + "workflow-rule",
    }
    said = refusals.refusal_words(problem, FRENCH, "fr")
    assert said.sentence == (
        "Un retour nécessite une évaluation des risques qui le recommande, faite au cours des"
        " derniers 30\u00a0jours. Envoyez d'abord une nouvelle évaluation des risques."
    )


def test_a_consent_that_does_not_cover_the_message_lists_what_it_lacks() -> None:
    problem = {
        "type": PROBLEM_BASE + "consent-refused",
        "detail": "Consent c-1 does not cover recipient ng.shelter; it expired at ...",
        "rule": "consent_scope",
        "gaps": ["recipient", "expired", "a gap not known yet"],
    }
    said = refusals.refusal_words(problem, FRENCH, "fr")
    assert said.sentence == "Le consentement ne couvre pas ce message :"
    assert said.items == ("Il n'autorise pas ce destinataire.", "Il a expiré.")


def test_a_problem_type_without_a_rule_is_said_in_french() -> None:
    problem = {"type": PROBLEM_BASE + "rate-limited", "detail": "Retry after 30 seconds."}
    said = refusals.refusal_words(problem, FRENCH, "fr")
    assert said.sentence == "Trop de messages à la fois. Attendez une minute et renvoyez."


def test_an_unknown_refusal_falls_back_to_its_english_text_marked_as_english() -> None:
    problem = {
        "type": PROBLEM_BASE + "something-new",
        "title": "Something new",
        "detail": "A refusal no catalog has words for yet.",
        "rule": "a_rule_not_known_yet",
    }
    said = refusals.refusal_words(problem, FRENCH, "fr")
    assert said == refusals.RefusalWords("A refusal no catalog has words for yet.", "en")
    # A rule with a window but none given (an older broker): the English text, not a
    # sentence with a hole.
    odd = {"rule": "planned_arrival_too_soon", "detail": "planned arrival too soon"}
    assert refusals.refusal_words(odd, FRENCH, "fr").lang == "en"
    assert refusals.refusal_words(odd | {"window_seconds": "72"}, FRENCH, "fr").lang == "en"


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(30 * 86400, "30\u00a0jours"), (72 * 3600, "72\u00a0heures"), (86400, "24\u00a0heures")],
)
def test_a_window_is_said_as_people_state_it(seconds: int, said: str) -> None:
    sentence = refusals.rule_sentence("planned_arrival_too_soon", seconds, FRENCH, "fr")
    assert sentence is not None
    assert said in sentence.sentence
