"""Safeguards that cannot be talked around (issue 17), tried with real processes.

A sending node that writes its own clear header (here a test client signing its own
envelopes with a participant's real keys) can make the header say what the sealed payload
does not. The broker cannot see the payload, so it accepts such a message; the recipient's
node, which opens it, computes the header from the payload, finds the lie, and answers with a
signed rejection. The lie then counts for nothing: the step that depended on it is refused.

One test per bypass the issue observed, each on a case of its own in one cluster per backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from trm_broker.crypto.keys import KeySet
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER, consent_body
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.compose import compose_envelope
from trm_broker.web.signed_requests import SignedRequests

pytestmark = pytest.mark.e2e


class Liar:
    """A sender that writes its own header: composes, seals and signs envelopes with a
    participant's real keys and submits them to the broker itself."""

    def __init__(self, broker_url: str, keyset: KeySet) -> None:
        self.broker_url = broker_url
        self.keyset = keyset

    def send(
        self,
        type: MessageType,
        case_ref: str,
        recipient: str,
        header: dict[str, Any],
        payload: dict[str, Any],
        categories: list[str],
        consent_ref: str | None,
    ) -> str:
        return asyncio.run(
            self._send(type, case_ref, recipient, header, payload, categories, consent_ref)
        )

    async def _send(
        self,
        type: MessageType,
        case_ref: str,
        recipient: str,
        header: dict[str, Any],
        payload: dict[str, Any],
        categories: list[str],
        consent_ref: str | None,
    ) -> str:
        broker = BrokerClient(self.broker_url)
        try:
            now = datetime.now(UTC)
            registry = await broker.registry(refresh=True)
            enc = registry.encryption_key(recipient, now)
            assert enc is not None
            _, signed = compose_envelope(
                signing_key=self.keyset.signing,
                sender=self.keyset.participant,
                recipient=recipient,
                recipient_enc_kid=enc.kid,
                recipient_enc_public=enc.public,
                recipient_enc_alg=enc.alg,
                type=type,
                case_ref=case_ref,
                header=header,
                payload=payload,
                data_categories=categories,  # type: ignore[arg-type]
                consent_ref=consent_ref,
                in_reply_to=None,
                now=now,
            )
            receipt = await broker.submit(signed, self.keyset.signing)
            return receipt.message_id
        finally:
            await broker.aclose()


class World:
    """The demo's two countries, with helpers for honest steps through the nodes."""

    def __init__(self, cluster: LocalCluster, at: Node, ng: Node, auditor: KeySet) -> None:
        self.cluster, self.at, self.ng, self.auditor = cluster, at, ng, auditor
        broker = cluster.broker
        assert broker is not None
        self.broker_url = broker.url
        self.nodes = {SENDER: at, RECIPIENT: ng, SHELTER: ng}
        self.keys = {k.participant: k for node in (at, ng) for k in node.keysets}
        self.keys[auditor.participant] = auditor

    def liar(self, participant: str) -> Liar:
        return Liar(self.broker_url, self.keys[participant])

    def consent(self, case_ref: str, suffix: str = "", **changes: Any) -> str:
        body = consent_body(case_ref, f"consent-{case_ref}{suffix}", datetime.now(UTC))
        body["purposes"] = [t.value for t in MessageType if t is not MessageType.CONSENT_WITHDRAWAL]
        body.update(changes)
        response = self._post(self.at, "/consents", {"consent": body})
        assert response.status_code == 201, response.text
        return str(body["id"])

    def step(
        self,
        path: str,
        case_ref: str,
        sender: str,
        recipient: str,
        payload: dict[str, Any],
        consent_ref: str | None,
    ) -> httpx.Response:
        body = {"sender": sender, "recipient": recipient, "payload": payload}
        if consent_ref is not None:
            body["consent_ref"] = consent_ref
        return self._post(self.nodes[sender], f"/cases/{case_ref}/{path}", body)

    def sent(self, *args: Any) -> str:
        response = self.step(*args)
        assert response.status_code == 201, response.text
        message_id = str(response.json()["message_id"])
        demo.wait_acknowledged(self.cluster, message_id, self.nodes[args[2]])
        return message_id

    def status(self, message_id: str, party: str) -> dict[str, Any]:
        auth = SignedRequests(self.keys[party].signing)
        response = httpx.get(f"{self.broker_url}/v1/messages/{message_id}", auth=auth, timeout=5)
        result: dict[str, Any] = response.json()
        return result

    def rejected(self, message_id: str, party: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(message_id, party)
            return status if status["status"] == "rejected" else None

        return demo.eventually("the recipient's signed rejection", check)

    def rejected_as_mismatch(self, message_id: str, sender: str) -> set[str]:
        """Wait for the recipient's signed rejection of ``message_id`` and check its code;
        the locations it names (its sender reads them)."""
        rejection = self.rejected(message_id, sender)["rejection"]
        assert rejection["code"] == "header-payload-mismatch", rejection
        return {reason.split(":")[0] for reason in rejection["reasons"]}

    def case(self, case_ref: str) -> dict[str, Any]:
        """The case as the sending focal point's node shows it (the broker's view)."""
        headers = {"authorization": f"Bearer {self.at.api_token}"}
        response = httpx.get(f"{self.at.url}/cases/{case_ref}", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def alerts(self, party: str) -> list[dict[str, Any]]:
        auth = SignedRequests(self.keys[party].signing)
        response = httpx.get(f"{self.broker_url}/v1/alerts", auth=auth, timeout=5)
        alerts: list[dict[str, Any]] = response.json()["alerts"]
        return alerts

    @staticmethod
    def _post(node: Node, path: str, body: dict[str, Any]) -> httpx.Response:
        # Wait for the broker's receipt or refusal (RFC 7240), not only the outbox's 202.
        headers = {"authorization": f"Bearer {node.api_token}", "prefer": "wait=10"}
        return httpx.post(node.url + path, json=body, headers=headers, timeout=20)

    # The honest beginning of a case, up to an accepted referral.
    def accepted_case(self, case_ref: str, **consent: Any) -> str:
        consent_ref = self.consent(case_ref, **consent)
        self.sent("referral", case_ref, SENDER, RECIPIENT, referral(), consent_ref)
        self.sent("referral-response", case_ref, RECIPIENT, SENDER, {"accepted": True}, consent_ref)
        return consent_ref


def referral(**changes: Any) -> dict[str, Any]:
    return {"destination_country": "NG", "is_child": False, **changes}


def risk(recommendation: str, level: str, **changes: Any) -> dict[str, Any]:
    return {
        "risk_level": level,
        "recommendation": recommendation,
        "assessed_at": datetime.now(UTC).isoformat(),
        **changes,
    }


def plan(**changes: Any) -> dict[str, Any]:
    arrival = datetime.now(UTC) + timedelta(days=5)
    return {"receiving_org": SHELTER, "planned_arrival": arrival.isoformat(), **changes}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """One cluster per backend for the whole module (each test on a case of its own)."""
    backend: str = request.param
    return backend


@pytest.fixture(scope="module")
def world(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    url: str | None = None
    if backend == "postgresql":
        url = request.getfixturevalue("module_empty_postgres_database")
    with LocalCluster(tmp_path_factory.mktemp("bypasses"), broker_database_url=url) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT, SHELTER])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG", kinds={SHELTER: "receiving_org"})
        auditor = KeySet.read(demo.register_auditor(cluster, "at.rapporteur", "AT"))
        yield World(cluster, at, ng, auditor)


def test_a_risk_assessment_whose_header_favours_return_is_rejected_and_the_return_refused(
    world: World,
) -> None:
    """Bypass 1: a header saying low risk and return recommended, a payload saying high
    risk and "remain". The recipient's node rejects it; the broker records the rejection as
    a finding, alerting the sender and the auditors; the return that relied on it is refused."""
    case = "AT-2026-LIE-RISK"
    consent = world.accepted_case(case)
    against = risk("remain_in_country_of_exploitation", "high")
    lie = world.liar(RECIPIENT).send(
        MessageType.RISK_ASSESSMENT,
        case,
        SENDER,
        {"risk_level": "low", "return_recommended": True, "assessed_at": against["assessed_at"]},
        against,
        [],
        consent,
    )
    assert world.rejected_as_mismatch(lie, RECIPIENT) == {
        "header/risk_level",
        "header/return_recommended",
    }
    refused = world.step("return-preparation", case, SENDER, RECIPIENT, plan(), consent)
    assert refused.status_code == 409, refused.text
    assert refused.json()["rule"] == "return_preparation_needs_recent_recommending_risk_assessment"
    assert refused.json()["window_seconds"] > 0  # the rule's window, relayed by the node
    for reader in (RECIPIENT, world.auditor.participant):
        kinds = {(a["case_ref"], a["kind"]) for a in world.alerts(reader)}
        assert (case, "header_payload_mismatch") in kinds, reader


def test_a_child_hidden_in_a_referrals_header_is_rejected_and_nothing_builds_on_it(
    world: World,
) -> None:
    """Bypass 2: a referral saying "not a child" whose payload is a child born in 2011, under
    the person's own consent. Rejected; no answer and no return are accepted on it, and an
    honest referral is refused at the broker for want of a guardian's consent."""
    case = "AT-2026-LIE-CHILD"
    consent = world.consent(case)
    child = referral(is_child=True, person={"date_of_birth": "2011-04-02"})
    lie = world.liar(SENDER).send(
        MessageType.REFERRAL,
        case,
        RECIPIENT,
        {"destination_country": "NG", "subject_is_minor": False},
        child,
        ["identity"],
        consent,
    )
    assert "header/subject_is_minor" in world.rejected_as_mismatch(lie, SENDER)
    answer = world.step("referral-response", case, RECIPIENT, SENDER, {"accepted": True}, consent)
    assert answer.status_code == 409, answer.text
    assert answer.json()["rule"] == "referral_rejected_by_recipient"
    ret = world.step("return-preparation", case, SENDER, RECIPIENT, plan(), consent)
    assert ret.status_code == 409, ret.text
    assert ret.json()["rule"] == "referral_rejected_by_recipient"
    honest = world.step("referral", case, SENDER, RECIPIENT, child, consent)
    assert honest.status_code == 409, honest.text
    assert honest.json()["rule"] == "minor_needs_guardian_consent"


def test_a_best_interests_determination_against_return_cannot_be_hidden(world: World) -> None:
    """Bypass 3: a child's return plan whose header says the determination supports return,
    its payload that return is not in the child's best interests. Sent honestly it is refused
    at the broker; sent with the lie it is rejected, and the case has no plan: the shelter
    cannot confirm a reception under it."""
    case = "AT-2026-LIE-BID"
    every = [c.value for c in DataCategory]
    guardian = world.consent(case, given_by="guardian", data_categories=every)
    world.sent("referral", case, SENDER, RECIPIENT, referral(is_child=True), guardian)
    world.sent("referral-response", case, RECIPIENT, SENDER, {"accepted": True}, guardian)
    world.sent("risk-assessment", case, RECIPIENT, SENDER, risk("return", "low"), guardian)
    against = plan(
        guardian={"organisation": "Fictional guardianship office"},
        best_interests_determination={"ref": "bid-1", "outcome": "return_not_in_best_interests"},
    )
    refused = world.step("return-preparation", case, SENDER, RECIPIENT, against, guardian)
    assert refused.status_code == 409, refused.text
    assert refused.json()["rule"] == "best_interests_do_not_support_return"
    lie = world.liar(SENDER).send(
        MessageType.RETURN_PREPARATION,
        case,
        RECIPIENT,
        {
            "receiving_org": SHELTER,
            "planned_arrival": against["planned_arrival"],
            "best_interests_ref": "bid-1",
            "best_interests_outcome": "return_in_best_interests",
            "subject_is_minor": True,
        },
        against,
        ["legal"],
        guardian,
    )
    assert "header/best_interests_outcome" in world.rejected_as_mismatch(lie, SENDER)
    # The rejected plan is no plan: the case is back where it was, without a receiving
    # organisation, and the shelter cannot confirm a reception under it.
    view = world.case(case)
    assert view["broker"] is not None, view["broker_problem"]
    assert (view["stage"], view["broker"]["state"]["receiving_org"]) == ("accepted", None)
    reception = world.step(
        "reception-confirmation",
        case,
        SHELTER,
        SENDER,
        {"outcome": "received", "received_at": datetime.now(UTC).isoformat()},
        guardian,
    )
    assert reception.status_code == 409, reception.text
    assert reception.json()["rule"] == "not_a_party_of_this_case"


def test_health_data_declared_as_none_is_rejected_and_the_return_refused(world: World) -> None:
    """Bypass 4: health data sent as "no categories" under a consent that excludes health.
    Rejected; sent honestly it is refused for the consent; the return has no assessment."""
    case = "AT-2026-LIE-HEALTH"
    consent = world.accepted_case(case, data_categories=["identity", "other", "travel", "contact"])
    with_health = risk("return", "low", health={"medical_needs": True})
    lie = world.liar(RECIPIENT).send(
        MessageType.RISK_ASSESSMENT,
        case,
        SENDER,
        {
            "risk_level": "low",
            "return_recommended": True,
            "assessed_at": with_health["assessed_at"],
        },
        with_health,
        [],
        consent,
    )
    assert world.rejected_as_mismatch(lie, RECIPIENT) == {"data_categories"}
    honest = world.step("risk-assessment", case, RECIPIENT, SENDER, with_health, consent)
    assert honest.status_code == 403, honest.text
    assert honest.json()["gaps"] == ["data_categories"]
    refused = world.step("return-preparation", case, SENDER, RECIPIENT, plan(), consent)
    assert refused.status_code == 409, refused.text
    assert refused.json()["rule"] == "return_preparation_needs_recent_recommending_risk_assessment"


def test_a_childs_case_is_guarded_on_every_message_and_after_the_guardians_withdrawal(
    world: World,
) -> None:
    """Bypass 5: the guardian rule held only for the referral and the return. A risk
    assessment under the child's own consent is refused, by the broker, however it is sent
    (no header lie needed: the case is a child's from its checked referral); after the
    guardian withdraws, the child's own consent covers nothing, the return included, and the
    case can still be closed."""
    case = "AT-2026-CHILD"
    every = [c.value for c in DataCategory]
    guardian = world.consent(case, given_by="guardian", data_categories=every)
    child = world.consent(case, "-own", given_by="person", data_categories=every)
    world.sent("referral", case, SENDER, RECIPIENT, referral(is_child=True), guardian)
    world.sent("referral-response", case, RECIPIENT, SENDER, {"accepted": True}, guardian)

    own = world.step("risk-assessment", case, RECIPIENT, SENDER, risk("return", "low"), child)
    assert own.status_code == 409, own.text
    assert own.json()["rule"] == "minor_needs_guardian_consent"
    header = {
        "risk_level": "low",
        "return_recommended": True,
        "assessed_at": datetime.now(UTC).isoformat(),
    }
    with pytest.raises(BrokerError) as refusal:
        world.liar(RECIPIENT).send(
            MessageType.RISK_ASSESSMENT,
            case,
            SENDER,
            header,
            risk("return", "low", assessed_at=header["assessed_at"]),
            [],
            child,
        )
    assert refusal.value.status == 409
    world.sent("risk-assessment", case, RECIPIENT, SENDER, risk("return", "low"), guardian)

    # After the guardian withdraws, the child's own consent covers nothing.
    withdrawn = world._post(world.at, f"/consents/{guardian}/withdraw", {})
    assert withdrawn.status_code == 200, withdrawn.text
    after = world.step("risk-assessment", case, RECIPIENT, SENDER, risk("return", "low"), child)
    assert after.status_code == 409, after.text
    assert after.json()["rule"] == "minor_needs_guardian_consent"
    supported = plan(
        guardian={"organisation": "Fictional guardianship office"},
        best_interests_determination={"ref": "bid-2", "outcome": "return_in_best_interests"},
    )
    ret = world.step("return-preparation", case, SENDER, RECIPIENT, supported, child)
    assert ret.status_code == 409, ret.text
    assert ret.json()["rule"] == "minor_needs_guardian_consent"
    # … and the case can still be closed.
    world.sent("closure", case, SENDER, RECIPIENT, {"reason": "consent_withdrawn"}, None)
    assert world.case(case)["stage"] == "closed"


def test_a_reception_whose_header_says_received_is_rejected_and_awaited_again(
    world: World,
) -> None:
    """A reception confirmation whose header says the person was received, its payload that
    they never arrived. Rejected; the case waits for a reception again (its deadline, and the
    alert when it passes, stand), no monitoring builds on it, and the truth can be sent."""
    case = "AT-2026-LIE-RECEPTION"
    consent = world.accepted_case(case)
    world.sent("risk-assessment", case, RECIPIENT, SENDER, risk("return", "low"), consent)
    world.sent("return-preparation", case, SENDER, RECIPIENT, plan(), consent)
    now = datetime.now(UTC).isoformat()
    lie = world.liar(SHELTER).send(
        MessageType.RECEPTION_CONFIRMATION,
        case,
        SENDER,
        {"outcome": "received", "at": now},
        {"outcome": "not_arrived", "received_at": now},
        [],
        consent,
    )
    assert world.rejected_as_mismatch(lie, SHELTER) == {"header/outcome"}
    view = world.case(case)
    assert view["broker"] is not None, view["broker_problem"]
    assert (view["stage"], view["broker"]["state"]["received_at"]) == ("return_prepared", None)
    assert [d["name"] for d in view["broker"]["deadlines"]] == ["reception_due"]
    period = {"period_start": "2026-12-01", "period_end": "2026-12-06"}
    monitoring = world.step("monitoring", case, SHELTER, SENDER, period, consent)
    assert monitoring.status_code == 409, monitoring.text
    assert monitoring.json()["rule"] == "case_monitoring_needs_reception"
    truth = {"outcome": "not_arrived", "received_at": datetime.now(UTC).isoformat()}
    sent = world.step("reception-confirmation", case, SHELTER, SENDER, truth, consent)
    assert sent.status_code == 201, sent.text
    assert world.case(case)["stage"] == "not_received"
    truth_id = sent.json()["message_id"]
    demo.eventually(  # the truth is acknowledged by the sending focal point's node
        "the reception's acknowledgement",
        lambda: world.status(truth_id, SHELTER)["status"] == "acknowledged" or None,
    )
