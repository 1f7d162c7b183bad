"""Refusals in the user's language: a problem+json from the node or the broker (its
``rule``, consent ``gaps`` and ``type``) as catalog sentences saying what to fix.

The broker's and the node's sentences are English, written for an API's caller; a case
worker reads a sentence of the catalog instead, chosen by the refusal's stable codes: the
workflow's rule (:data:`trm_broker.domain.workflow.RULES`), the consent check's rule and
gaps, else the problem's type. A code no sentence is written for yet is shown as the
problem's own English text, marked as English (``lang="en"``), so nothing is ever hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from babel.units import format_unit

from trm_broker.domain import workflow
from trm_broker.node.web.i18n import N_
from trm_broker.web.problems import PROBLEM_BASE

Translate = Callable[[str], str]

#: The workflow's rules (trm_broker/domain/workflow.py), each as what the case worker does.
#: ``%(span)s`` is the rule's window (``30 days``), from the broker's ``window_seconds``.
RULE_SENTENCES: dict[str, str] = {
    "case_already_referred": N_(
        "This case is already referred: a referral is sent once per case. Send the case's"
        " next step instead."
    ),
    "case_not_referred": N_("This case is not referred yet. Send the referral first."),
    "case_closed": N_("The case is closed: nothing more is accepted in it."),
    "not_a_party_of_this_case": N_(
        "This message goes only between the focal points of the case and its designated"
        " receiving organisation. Check the recipient."
    ),
    "referral_only_by_focal_point": N_("Only a focal point sends a referral."),
    "referral_only_to_destination_focal_point": N_(
        "A referral goes to a focal point of its destination country. Check the recipient"
        " and the destination country."
    ),
    "referral_to_own_country": N_(
        "A referral goes to another country than your own. Check the destination country."
    ),
    "minor_needs_guardian_consent": N_(
        "For a child, the consent must be given by a guardian. Register the guardian's"
        " consent first."
    ),
    "referral_rejected_by_recipient": N_(
        "The recipient's node rejected the referral. The sending focal point sends a"
        " corrected referral first."
    ),
    "referral_response_only_from_destination_to_sending": N_(
        "The answer to a referral goes only from the destination focal point to the sending one."
    ),
    "referral_already_answered": N_("The referral is already answered: it is answered once."),
    "risk_assessment_only_between_focal_points": N_(
        "A risk assessment goes only from one focal point of the case to the other."
    ),
    "risk_assessment_needs_acceptance": N_(
        "A risk assessment is sent after the referral was accepted and before the person is"
        " received."
    ),
    "risk_assessment_in_future": N_(
        "The assessment's time is later than now. Enter when it was made."
    ),
    "return_preparation_only_from_sending_to_destination": N_(
        "A return plan goes only from the sending focal point to the destination one, or to"
        " the receiving organisation the plan designates."
    ),
    "return_plan_to_org_must_match_plan": N_(
        "Send the return plan to the destination focal point first, then to the receiving"
        " organisation it names, with the same planned arrival."
    ),
    "return_preparation_needs_acceptance": N_(
        "A return plan is sent after the referral was accepted and before the person is received."
    ),
    "return_preparation_needs_recent_recommending_risk_assessment": N_(
        "A return needs a risk assessment that recommends return, made within the last"
        " %(span)s. Send a new risk assessment first."
    ),
    "risk_assessment_not_yet_acknowledged": N_(
        "The recipient has not yet acknowledged the latest risk assessment. Wait for its"
        " acknowledgement, then send the return plan."
    ),
    "receiving_org_not_registered_in_country_of_return": N_(
        "The receiving organisation must be registered as one in the country of return."
        " Choose another receiving organisation."
    ),
    "planned_arrival_too_soon": N_(
        "The planned arrival must be at least %(span)s ahead, so the receiving organisation"
        " can prepare. Choose a later arrival."
    ),
    "minor_needs_best_interests_determination": N_(
        "For a child, a return needs a best-interests determination that found return in"
        " the child's best interests. Fill in the best-interests determination."
    ),
    "best_interests_do_not_support_return": N_(
        "The best-interests determination found that return is not in the child's best"
        " interests: no return can be planned."
    ),
    "reception_confirmation_needs_return_preparation": N_(
        "A reception is confirmed once, after a return plan."
    ),
    "reception_confirmation_only_by_designated_receiving_org": N_(
        "Only the receiving organisation designated in the return plan confirms the"
        " reception, to a focal point of the case."
    ),
    "reception_in_future": N_(
        "The reception's time is later than now. Enter when the person was received."
    ),
    "case_monitoring_only_by_receiving_org_or_destination": N_(
        "A monitoring report is sent only by the case's receiving organisation or the"
        " destination focal point, to a focal point of the case."
    ),
    "case_monitoring_needs_reception": N_(
        "A monitoring report is sent only after the person was received."
    ),
    "monitoring_period_over": N_(
        "Monitoring reports are accepted for %(span)s after reception: that time is over."
    ),
    "monitoring_period_reversed": N_("The period's start is after its end. Check the two dates."),
    "case_closure_only_between_focal_points": N_(
        "A case closure goes only from one focal point of the case to the other."
    ),
    "consent_withdrawal_only_by_sending_focal_point": N_(
        "Only the sending focal point, which registered the consent, sends its withdrawal."
    ),
    "reception_plan_response_only_by_designated_receiving_org": N_(
        "Only the receiving organisation designated in the return plan answers it, to a"
        " focal point of the case."
    ),
    "pre_departure_contact_only_by_designated_receiving_org": N_(
        "Only the receiving organisation designated in the return plan records a contact"
        " before departure, to a focal point of the case."
    ),
    "needs_plan_sent_to_receiving_org": N_(
        "This is sent after the return plan was sent to the receiving organisation, and"
        " before the person is received."
    ),
    "pre_departure_contact_in_future": N_(
        "The contact's time is later than now. Enter when the contact took place."
    ),
}

#: The consent check's rules (trm_broker/api/consents/service.py, api/messages/rules.py)
#: and the node's trust check (node/trust.py).
OTHER_RULE_SENTENCES: dict[str, str] = {
    "consent_missing": N_(
        "This message needs a consent that covers it. Choose one; if there is none, the"
        " sending focal point registers one first."
    ),
    "consent_unknown": N_(
        "The consent named was not registered by the case's sending focal point. Choose a"
        " consent of this case."
    ),
    "consent_scope": N_("The consent does not cover this message:"),
    "withdrawal_of_unknown_consent": N_(
        "Only a consent of this case that your organisation registered can be withdrawn."
    ),
    "consent_already_withdrawn": N_("This consent was already withdrawn."),
    "registry_key_not_proven": N_(
        "The exchange's registry lists a key its operator has not confirmed. Nothing can"
        " be sent to or from that organisation until the operator does: tell your node's"
        " administrator."
    ),
}

#: What a consent lacks (trm_broker.domain.consent.ScopeGap).
GAP_SENTENCES: dict[str, str] = {
    "case": N_("It is for another case."),
    "purpose": N_("It was not given for this step."),
    "recipient": N_("It does not allow this recipient."),
    "data_categories": N_("It does not cover the kinds of data in this message."),
    "not_yet_valid": N_("It is not valid yet."),
    "expired": N_("It has expired."),
    "withdrawn": N_("It was withdrawn."),
}

#: The problem types (``urn:trm-broker:problem:<slug>``) a form can get back.
TYPE_SENTENCES: dict[str, str] = {
    "invalid-request": N_("The message is not valid. Check the form and send it again."),
    "invalid-envelope": N_(
        "The exchange found the message not valid. Check the form and send it again."
    ),
    "header-payload-mismatch": N_(
        "The message's header does not match its content. Send the form again."
    ),
    "consent-not-chosen": N_("Choose the consent this message is sent under."),
    "consent-refused": N_(
        "No consent covers this message. The sending focal point registers one that"
        " covers it first."
    ),
    "workflow-rule": N_("The case's workflow does not allow this step now."),
    "forbidden": N_("Your organisation may not send this message."),
    "unknown-sender": N_(
        "The exchange does not know your organisation: tell your node's administrator."
    ),
    "key-not-proven": N_(
        "A key of the exchange's registry is not confirmed by its operator: tell your"
        " node's administrator."
    ),
    "bad-signature": N_(
        "The exchange could not verify this node's signature: tell your node's administrator."
    ),
    "key-not-usable": N_(
        "This node's signing key is revoked or expired: tell your node's administrator."
    ),
    "sender-key-missing": N_(
        "This node no longer holds your organisation's key: tell your node's administrator."
    ),
    "not-found": N_("The case or consent was not found at the exchange."),
    "conflict": N_("The case changed at the same time. Send the form again."),
    "sent-after-refused": N_(
        "The message this one follows was refused: correct and send that one first."
    ),
    "idempotency-key-reused": N_(
        "This form was already used for another message. Reload the page and fill it in again."
    ),
    "idempotency-key-in-use": N_("This form is still being sent. Wait a moment and open the case."),
    "too-large": N_("The message is too large. Shorten the longest texts."),
    "rate-limited": N_("Too many messages at once. Wait a minute and send again."),
    "broker-unavailable": N_(
        "The exchange cannot be reached just now. Wait a few minutes and send again."
    ),
    "unavailable": N_("The exchange is busy. Wait a few minutes and send again."),
    "broker-failed": N_(
        "The exchange did not answer as it should. Send again later; if it happens again,"
        " tell your node's administrator."
    ),
}


#: A consent's registration refused (trm_broker/api/consents/service.py), where the message
#: sentences above would mislead: by the problem's type.
CONSENT_TYPE_SENTENCES: dict[str, str] = {
    "forbidden": N_(
        "Another focal point sends this case: only it registers the case's consents. Check"
        " the case reference, or start a new case."
    ),
    "conflict": N_("This consent is already registered at the exchange. Open the case to see it."),
    "invalid-request": N_(
        "The exchange found the consent not valid. Start again, and check its scope and its dates."
    ),
}


@dataclass(frozen=True)
class RefusalWords:
    """A refusal as a page shows it: ``sentence`` (in ``lang``: the user's language, or
    ``"en"`` for the problem's own text) and, for a consent, what it lacks."""

    sentence: str
    lang: str
    items: tuple[str, ...] = field(default=())


def rule_sentence(
    rule: str | None, window_seconds: object, gettext: Translate, language: str
) -> RefusalWords | None:
    """The workflow or consent rule ``rule`` in words, with its window (``window_seconds``)
    where it has one; ``None`` for a rule no sentence is written for."""
    if rule is None:
        return None
    text = RULE_SENTENCES.get(rule) or OTHER_RULE_SENTENCES.get(rule)
    if text is None:
        return None
    if "%(span)s" not in text:
        return RefusalWords(gettext(text), language)
    span = _window(window_seconds, language)
    if span is None:
        return None
    return RefusalWords(gettext(text) % {"span": span}, language)


def step_words(step: Mapping[str, Any], gettext: Translate, language: str) -> RefusalWords:
    """Why a next step of the broker's case view (``allowed`` false) is not possible yet: its
    rule's sentence, else the broker's own English text, marked as English."""
    found = rule_sentence(
        _text(step.get("rule")) or None, step.get("window_seconds"), gettext, language
    )
    return found or RefusalWords(_text(step.get("detail")) or _text(step.get("rule")), "en")


def refusal_words(problem: Mapping[str, Any], gettext: Translate, language: str) -> RefusalWords:
    """What a problem+json body says, in ``language`` when its codes are known."""
    detail = _text(problem.get("detail")) or _text(problem.get("title"))
    found = rule_sentence(
        _text(problem.get("rule")), problem.get("window_seconds"), gettext, language
    )
    if found is not None:
        gaps = problem.get("gaps")
        if problem.get("rule") == "consent_scope" and isinstance(gaps, list):
            items = tuple(gettext(GAP_SENTENCES[g]) for g in gaps if g in GAP_SENTENCES)
            found = RefusalWords(found.sentence, found.lang, items)
        return found
    for key in ("broker_problem", "type"):
        slug = _text(problem.get(key)).removeprefix(PROBLEM_BASE)
        if slug in TYPE_SENTENCES and not (key == "type" and slug == "broker-refused"):
            return RefusalWords(gettext(TYPE_SENTENCES[slug]), language)
    return RefusalWords(detail, "en")


def consent_refusal_words(
    problem: Mapping[str, Any], gettext: Translate, language: str
) -> RefusalWords:
    """A consent's registration refused, in ``language``: by the broker's problem type where
    a message's sentence would mislead, else as :func:`refusal_words` says it."""
    for key in ("broker_problem", "type"):
        slug = _text(problem.get(key)).removeprefix(PROBLEM_BASE)
        if slug in CONSENT_TYPE_SENTENCES:
            return RefusalWords(gettext(CONSENT_TYPE_SENTENCES[slug]), language)
    return refusal_words(problem, gettext, language)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _window(seconds: object, language: str) -> str | None:
    """A rule's window (``window_seconds`` of the broker's refusal) as people state it in
    ``language``: ``30 jours``, ``72 hours``."""
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
        return None
    count, unit = workflow.span_parts(timedelta(seconds=seconds))
    return format_unit(count, f"duration-{unit}", length="long", locale=language)
