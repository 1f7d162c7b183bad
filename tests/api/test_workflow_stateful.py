"""Random sequences of messages, consents and withdrawals through the real broker API, with
the invariants of principles 2 and 5 checked after every step (hypothesis, stateful)."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AsyncExitStack
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

ROUTES = st.sampled_from(
    [
        ("at", "ng"),
        ("ng", "at"),
        ("at", "shelter"),
        ("shelter", "ng"),
        ("shelter", "at"),
        ("fake", "at"),
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
        return {
            "readiness": data.draw(st.sampled_from(["ready", "needs_support", "cannot_receive"]))
        }
    if kind is T.PRE_DEPARTURE_CONTACT:
        return {"at": now.isoformat()}
    return {}


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
        self.accepted: list[tuple[MessageType, str, dict[str, Any], datetime]] = []
        self.sent_to: set[tuple[MessageType, str]] = set()  # (type, recipient) accepted
        self.plan_to_shelter = False  # the plan in force was sent to the shelter

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.stack.aclose())
        self.loop.close()
        self.tmp.cleanup()

    @precondition(lambda self: self.consent is None)
    @rule(
        purposes=st.sets(st.sampled_from(list(MessageType)), min_size=1),
        recipients=st.sets(
            st.sampled_from(["ng.naptip", "ng.shelter", "at.focal-point"]), min_size=1
        ),
        categories=st.sets(st.sampled_from(list(DataCategory)), min_size=1),
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
        kind=st.sampled_from(list(MessageType)),
        route=ROUTES,
        categories=st.sets(st.sampled_from(list(DataCategory)), min_size=1, max_size=3),
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
            self.accepted_now(kind, sender, recipient, header, now)
            if kind is T.CONSENT_WITHDRAWAL:
                self.withdrawn_at = now

    @rule()
    def advance(self) -> None:
        """The next step of a case that goes well, so deep states are reached too."""
        now = datetime.now(UTC)
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
            (T.RETURN_PREPARATION, AT, SHELTER, self.plan_in_force() or {}),
            (T.RECEPTION_PLAN_RESPONSE, SHELTER, AT, {"readiness": "ready"}),
            (T.PRE_DEPARTURE_CONTACT, SHELTER, NG, {"at": now.isoformat()}),
            (T.RECEPTION_CONFIRMATION, SHELTER, NG, {"outcome": "received", "at": now.isoformat()}),
        ]
        for kind, sender, recipient, header in plan:
            if (kind, recipient.participant) in self.sent_to:
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
                self.accepted_now(kind, sender, recipient, header, now)
            return

    def accepted_now(
        self,
        kind: MessageType,
        sender: KeySet,
        recipient: KeySet,
        header: dict[str, Any],
        now: datetime,
    ) -> None:
        self.accepted.append((kind, sender.participant, header, now))
        self.sent_to.add((kind, recipient.participant))
        if kind is T.RETURN_PREPARATION:  # a new plan, or the plan in force sent on
            self.plan_to_shelter = recipient is SHELTER

    def plan_in_force(self) -> dict[str, Any] | None:
        plans = [h for k, _, h, _ in self.accepted if k is T.RETURN_PREPARATION]
        return plans[-1] if plans else None

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
        # its withdrawal.
        assert self.consent is not None
        assert self.withdrawn_at is None
        if kind is not T.CONSENT_WITHDRAWAL:
            assert kind.value in self.consent["purposes"]
            # The focal point that registered the consent (it holds the form) may always
            # receive; anyone else must be named by it.
            assert recipient is AT or recipient.participant in self.consent["recipients"]
            assert {c.value for c in categories} <= set(self.consent["data_categories"])
        # Principle 5: a return only after a recent risk assessment recommending it.
        if kind is T.RETURN_PREPARATION:
            assessments = [h for k, _, h, _ in self.accepted if k is T.RISK_ASSESSMENT]
            assert assessments
            latest = assessments[-1]
            assert latest["return_recommended"]
            assert datetime.fromisoformat(latest["assessed_at"]) >= now - timedelta(days=30)
            assert header["receiving_org"] == SHELTER.participant
        # The plan goes on to the shelter as it is in force; only the shelter answers it and
        # meets the person, once it has the plan and before reception.
        if kind is T.RETURN_PREPARATION and recipient is SHELTER:
            assert header == self.plan_in_force()
        if kind in (T.RECEPTION_PLAN_RESPONSE, T.PRE_DEPARTURE_CONTACT):
            assert sender is SHELTER
            assert recipient in (AT, NG)
            assert self.plan_to_shelter
            assert not any(k is T.RECEPTION_CONFIRMATION for k, *_ in self.accepted)
        # Reception is confirmed by the designated receiving organisation only.
        if kind is T.RECEPTION_CONFIRMATION:
            plans = [h for k, _, h, _ in self.accepted if k is T.RETURN_PREPARATION]
            assert plans
            assert sender.participant == plans[-1]["receiving_org"]

    @invariant()
    def nothing_is_delivered_under_a_withdrawn_consent(self) -> None:
        if self.withdrawn_at is None:
            return

        async def pending() -> list[str]:
            async with self.broker.app.state.broker.sessions() as session:
                rows = await session.execute(
                    select(Message.type)
                    .join(Delivery, Delivery.message_id == Message.id)
                    .where(Message.consent_ref == CONSENT, Delivery.status == "pending")
                )
                return [str(t) for t in rows.scalars().all()]

        assert set(self.run(pending())) <= {"consent_withdrawal"}


TestCaseTransferMachine = CaseTransferMachine.TestCase
TestCaseTransferMachine.settings = settings(
    max_examples=examples(12),
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
