"""Random sequences of messages, their recipients' answers, consents and withdrawals through
the real broker API, with the invariants of principles 2 and 5 checked after every step
(hypothesis, stateful)."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select

from tests.databases import copy_sqlite, process_sqlite_template
from tests.pace import examples
from tests.support import Broker, broker_settings, envelope, running_broker
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.store.models import Delivery, Message

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
SHELTER = KeySet.generate("ng.shelter")
FAKE_ORG = KeySet.generate("ng.not-an-org")  # a focal point of NG, not a receiving org
PARTIES = {"at": AT, "ng": NG, "shelter": SHELTER, "fake": FAKE_ORG}
CASE = "AT-2026-STATE"
CONSENT = f"consent-{CASE}"
T = MessageType

KINDS = list(MessageType)
ROUTES = st.sampled_from(
    [
        ("at", "ng"),
        ("ng", "at"),
        ("shelter", "ng"),
        ("shelter", "at"),
        ("fake", "at"),
        ("at", "shelter"),
    ]
)


def header_for(kind: MessageType, data: st.DataObject, now: datetime) -> dict[str, Any]:
    if kind is T.REFERRAL:
        return {"destination_country": "NG", "subject_is_minor": False}
    if kind is T.REFERRAL_RESPONSE:
        return {"accepted": data.draw(st.booleans())}
    if kind is T.RISK_ASSESSMENT:
        age = data.draw(st.sampled_from([0, 10, 40]))
        return {
            "risk_level": data.draw(st.sampled_from(["low", "medium", "high"])),
            "return_recommended": data.draw(st.booleans()),
            "assessed_at": (now - timedelta(days=age)).isoformat(),
        }
    if kind is T.RETURN_PREPARATION:
        return {
            "receiving_org": data.draw(st.sampled_from(["ng.shelter", "ng.not-an-org"])),
            "planned_arrival": (
                now + timedelta(days=data.draw(st.sampled_from([1, 5])))
            ).isoformat(),
        }
    if kind is T.RECEPTION_CONFIRMATION:
        return {"outcome": "received", "at": now.isoformat()}
    if kind is T.CASE_MONITORING:
        return {"period_start": now.date().isoformat(), "period_end": now.date().isoformat()}
    if kind is T.CASE_CLOSURE:
        return {"reason": "other"}
    if kind is T.RECEPTION_PLAN_RESPONSE:
        return {"readiness": data.draw(st.sampled_from(["ready", "needs_support"]))}
    if kind is T.PRE_DEPARTURE_CONTACT:
        return {"at": now.isoformat()}
    return {}


@dataclass(frozen=True)
class Accepted:
    """A message the broker accepted: its type, id, header, envelope and data categories."""

    kind: MessageType
    message_id: str
    header: dict[str, Any]
    envelope: dict[str, str]
    categories: set[DataCategory]
    recipient: KeySet

    @property
    def assessed_at(self) -> datetime:
        return datetime.fromisoformat(self.header["assessed_at"])


class CaseTransferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.tmp = tempfile.TemporaryDirectory()
        url = copy_sqlite(process_sqlite_template(), Path(self.tmp.name) / "broker.db")
        self.broker: Broker = self.loop.run_until_complete(
            self.stack.enter_async_context(
                running_broker(broker_settings(url, Path(self.tmp.name)))
            )
        )
        self.broker.auto_consent = False
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (SHELTER, "NG", "receiving_org"),
            (FAKE_ORG, "NG", "focal_point"),
        ]:
            self.run(self.broker.register(keyset, country, kind=kind))
        self.consent: dict[str, Any] | None = None
        self.withdrawn_at: datetime | None = None
        self.accepted: list[Accepted] = []
        #: The recipients' answers so far, by message id: "acknowledged" or "rejected".
        self.answers: dict[str, str] = {}

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.stack.aclose())
        self.loop.close()
        self.tmp.cleanup()

    @precondition(lambda self: self.consent is None)
    @rule(
        # Mostly a consent that covers the whole case, so deep states are reached; now and
        # then a narrower one.
        purposes=st.just(set(MessageType))
        | st.sets(st.sampled_from(list(MessageType)), min_size=1),
        recipients=st.just({"ng.naptip", "ng.shelter"})
        | st.sets(st.sampled_from(["ng.naptip", "ng.shelter", "at.focal-point"]), min_size=1),
        categories=st.just(set(DataCategory))
        | st.sets(st.sampled_from(list(DataCategory)), min_size=1),
    )
    def register_consent(
        self, purposes: set[MessageType], recipients: set[str], categories: set[DataCategory]
    ) -> None:
        body = {
            "id": CONSENT,
            "case_ref": CASE,
            "given_by": "person",
            "purposes": sorted(p.value for p in purposes),
            "recipients": sorted(recipients),
            "data_categories": sorted(c.value for c in categories),
            "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "form_digest": "sha-256:" + "D" * 43,
        }
        response = self.run(self.broker.call("POST", "/v1/consents", AT, json=body))
        assert response.status_code == 201, response.text
        self.consent = body

    @rule(
        kind=st.sampled_from(KINDS),
        route=ROUTES,
        categories=st.sets(st.sampled_from(list(DataCategory)), max_size=3),
        data=st.data(),
    )
    def send(
        self,
        kind: MessageType,
        route: tuple[str, str],
        categories: set[DataCategory],
        data: st.DataObject,
    ) -> None:
        now = datetime.now(UTC)
        header = header_for(kind, data, now)
        sender, recipient = PARTIES[route[0]], PARTIES[route[1]]
        signed = envelope(
            sender,
            recipient,
            kind,
            header,
            case_ref=CASE,
            consent_ref=CONSENT,
            data_categories=sorted(categories),
        )
        response = self.run(self.broker.submit(signed, signer=sender))
        assert response.status_code in (202, 403, 409), response.text
        if response.status_code == 202:
            self.check_allowed(kind, sender, recipient, categories, header, now)
            self.accepted.append(
                Accepted(kind, response.json()["message_id"], header, signed, categories, recipient)
            )
            if kind is T.CONSENT_WITHDRAWAL:
                self.withdrawn_at = now

    @precondition(lambda self: self.unanswered())
    @rule(data=st.data(), acknowledge=st.sampled_from([True, True, True, False]))
    def answer(self, data: st.DataObject, acknowledge: bool) -> None:
        """A recipient's node answers a message: mostly it acknowledges it, now and then it
        rejects it (a payload its header contradicts)."""
        message = data.draw(st.sampled_from(self.unanswered()))
        if acknowledge:
            response = self.run(self.broker.answer(message.envelope))
        else:
            response = self.run(
                self.broker.answer(
                    message.envelope, status="rejected", code="header-payload-mismatch"
                )
            )
        if response.status_code == 404:  # dropped by a withdrawal: nobody answers it now
            assert self.withdrawn_at is not None
            self.answers[message.message_id] = "dropped"
            return
        assert response.status_code == 200, response.text
        status = response.json()["status"]
        assert status == ("acknowledged" if acknowledge else "rejected")
        self.answers[message.message_id] = status

    def unanswered(self) -> list[Accepted]:
        return [m for m in self.accepted if m.message_id not in self.answers]

    def of_this_referral(self) -> list[Accepted]:
        """The messages since the latest referral: a corrected referral (after its recipient
        rejected the first) starts the case afresh."""
        starts = [i for i, m in enumerate(self.accepted) if m.kind is T.REFERRAL]
        return self.accepted[starts[-1] :] if starts else []

    @rule()
    def advance(self) -> None:
        """The next steps of a case that goes well (up to three), so deep states are reached
        too."""
        for _ in range(3):
            if not self.advance_once():
                return

    def advance_once(self) -> bool:
        """Send the case's next step; whether the broker accepted it."""
        now = datetime.now(UTC)
        to_ng = [
            m
            for m in self.of_this_referral()
            if m.kind is T.RETURN_PREPARATION and m.recipient is NG
        ]
        in_force = to_ng[-1].header if to_ng else {}
        plan: list[tuple[MessageType, KeySet, KeySet, dict[str, Any]]] = [
            (T.REFERRAL, AT, NG, {"destination_country": "NG", "subject_is_minor": False}),
            (T.REFERRAL_RESPONSE, NG, AT, {"accepted": True}),
            (
                T.RISK_ASSESSMENT,
                NG,
                AT,
                {"risk_level": "low", "return_recommended": True, "assessed_at": now.isoformat()},
            ),
            (
                T.RETURN_PREPARATION,
                AT,
                NG,
                {
                    "receiving_org": "ng.shelter",
                    "planned_arrival": (now + timedelta(days=5)).isoformat(),
                },
            ),
            # The plan in force, on to the shelter; it answers and meets the person.
            (T.RETURN_PREPARATION, AT, SHELTER, in_force),
            (T.RECEPTION_PLAN_RESPONSE, SHELTER, AT, {"readiness": "ready"}),
            (T.PRE_DEPARTURE_CONTACT, SHELTER, AT, {"at": now.isoformat()}),
            (T.RECEPTION_CONFIRMATION, SHELTER, NG, {"outcome": "received", "at": now.isoformat()}),
        ]
        # What is done: accepted and not rejected by its recipient. The recipients' nodes answer
        # first what is waiting, as they do within seconds.
        for waiting in self.unanswered():
            response = self.run(self.broker.answer(waiting.envelope))
            status = response.json()["status"] if response.status_code == 200 else "dropped"
            self.answers[waiting.message_id] = status
        done = {
            (m.kind, m.recipient.participant)
            for m in self.of_this_referral()
            if self.answers.get(m.message_id) != "rejected"
        }
        for kind, sender, recipient, header in plan:
            if (kind, recipient.participant) in done:
                continue
            signed = envelope(
                sender,
                recipient,
                kind,
                header,
                case_ref=CASE,
                consent_ref=CONSENT,
                data_categories=[DataCategory.IDENTITY],
            )
            response = self.run(self.broker.submit(signed, signer=sender))
            assert response.status_code in (202, 403, 409), response.text
            if response.status_code == 202:
                self.check_allowed(kind, sender, recipient, {DataCategory.IDENTITY}, header, now)
                self.accepted.append(
                    Accepted(kind, response.json()["message_id"], header, signed, set(), recipient)
                )
                return True
            return False
        return False

    @precondition(lambda self: self.consent is not None and self.withdrawn_at is None)
    @rule()
    def withdraw(self) -> None:
        response = self.run(self.broker.call("POST", f"/v1/consents/{CONSENT}/withdraw", AT))
        assert response.status_code == 200, response.text
        self.withdrawn_at = datetime.now(UTC)

    def check_allowed(
        self,
        kind: MessageType,
        sender: KeySet,
        recipient: KeySet,
        categories: set[DataCategory],
        header: dict[str, Any],
        now: datetime,
    ) -> None:
        # Principle 2: nothing accepted without a consent that covers it, and nothing after
        # its withdrawal; but a closure that carries no personal data, which needs none.
        if kind is T.CASE_CLOSURE and not categories:
            return
        assert self.consent is not None
        assert self.withdrawn_at is None
        if kind is not T.CONSENT_WITHDRAWAL:
            assert kind.value in self.consent["purposes"]
            # The focal point that registered the consent (it holds the form) may always
            # receive; anyone else must be named by it.
            assert recipient is AT or recipient.participant in self.consent["recipients"]
            assert {c.value for c in categories} <= set(self.consent["data_categories"])
        # Principle 5: a return only after a recent risk assessment recommending it, that
        # its recipient acknowledged, and none accepted later still waiting for its answer.
        if kind is T.RETURN_PREPARATION:
            assessments = [m for m in self.of_this_referral() if m.kind is T.RISK_ASSESSMENT]
            counted = [m for m in assessments if self.answers.get(m.message_id) == "acknowledged"]
            assert counted
            latest = max(counted, key=lambda m: m.assessed_at)
            assert latest.header["return_recommended"]
            assert latest.assessed_at >= now - timedelta(days=30)
            waiting = [m for m in assessments if m.message_id not in self.answers]
            assert all(m.assessed_at < latest.assessed_at for m in waiting)
            assert header["receiving_org"] == SHELTER.participant
        # The plan goes on to its receiving organisation only as it is in force; only that
        # organisation answers it and meets the person, once it has it and before reception.
        counted_plans = [
            m
            for m in self.of_this_referral()
            if m.kind is T.RETURN_PREPARATION and self.answers.get(m.message_id) != "rejected"
        ]
        if kind is T.RETURN_PREPARATION and recipient is not NG:
            to_ng = [m for m in counted_plans if m.recipient is NG]
            assert to_ng
            assert recipient.participant == header["receiving_org"]
            in_force = to_ng[-1].header
            assert header["planned_arrival"] == in_force["planned_arrival"]
            assert header["receiving_org"] == in_force["receiving_org"]
        # A message its recipient rejected counts for nothing: a referral's answer, a
        # reception confirmation (the case awaits another).
        counted = [
            m for m in self.of_this_referral() if self.answers.get(m.message_id) != "rejected"
        ]
        receptions = [m for m in counted if m.kind is T.RECEPTION_CONFIRMATION]
        if kind in (T.RECEPTION_PLAN_RESPONSE, T.PRE_DEPARTURE_CONTACT):
            assert sender is SHELTER
            assert recipient in (AT, NG)
            assert counted_plans
            assert counted_plans[-1].recipient is SHELTER
            assert not receptions
        if kind is T.REFERRAL_RESPONSE:
            assert not any(m.kind is T.REFERRAL_RESPONSE for m in counted)
        if kind is T.RECEPTION_CONFIRMATION:
            assert not receptions
        if kind is T.CASE_MONITORING:
            assert [m.header["outcome"] for m in receptions] == ["received"]
        # A referral again only after its recipient rejected the first.
        if kind is T.REFERRAL:
            earlier = [m for m in self.accepted if m.kind is T.REFERRAL]
            assert not earlier or self.answers.get(earlier[-1].message_id) == "rejected"
        # Reception is confirmed by the designated receiving organisation only, of a plan
        # its recipient did not reject.
        if kind is T.RECEPTION_CONFIRMATION:
            plans = [
                m
                for m in self.of_this_referral()
                if m.kind is T.RETURN_PREPARATION and m.recipient is NG
            ]
            assert plans
            assert self.answers.get(plans[-1].message_id) != "rejected"
            assert sender.participant == plans[-1].header["receiving_org"]

    @invariant()
    def nothing_is_delivered_under_a_withdrawn_consent(self) -> None:
        if self.withdrawn_at is None:
            return

        async def pending() -> list[str]:
            async with self.broker.app.state.broker.sessions() as session:
                rows = await session.execute(
                    select(Message.id)
                    .join(Delivery, Delivery.message_id == Message.id)
                    .where(Message.consent_ref == CONSENT, Delivery.status == "pending")
                )
                return [str(t) for t in rows.scalars().all()]

        # Only what needs no consent: the withdrawal, a closure without personal data.
        free = {
            m.message_id
            for m in self.accepted
            if m.kind is T.CONSENT_WITHDRAWAL or (m.kind is T.CASE_CLOSURE and not m.categories)
        }
        assert set(self.run(pending())) <= free


TestCaseTransferMachine = CaseTransferMachine.TestCase
TestCaseTransferMachine.settings = settings(
    max_examples=examples(12),
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
