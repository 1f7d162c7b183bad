"""`trm-broker demo`: a broker and two NRM nodes as real processes, and one real referral.

Everything in it is fictional. It runs on SQLite files in a temporary folder and removes
them when it ends.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from trm_broker.crypto.keys import KeySet
from trm_broker.devcluster import LocalCluster, Node, Process
from trm_broker.ledger.note import Checkpoint
from trm_broker.ledger_cli import verify
from trm_broker.web.signed_requests import SignedRequests

T = TypeVar("T")

SENDER = "at.focal-point"  # Austria: country of exploitation, where the case is opened
RECIPIENT = "ng.naptip"  # Nigeria: country of return (NAPTIP, the Nigerian NRM)
AUDITOR = "at.rapporteur"  # Austria's national rapporteur on trafficking

DEMO_REFERRAL: dict[str, Any] = {
    "identification_summary": "Fictional demo person identified during a labour inspection.",
    "form_of_exploitation": "forced_labour",
    "immediate_needs": ["shelter", "medical_check", "legal_counselling"],
    "languages": ["en", "pcm"],
    "interpreter_needed": True,
    "is_child": False,
}


def _eventually(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _broker_of(cluster: LocalCluster) -> Process:
    if cluster.broker is None:
        raise RuntimeError("start the broker first")
    return cluster.broker


def register(cluster: LocalCluster, node: Node, country: str) -> None:
    """Register the node's participants, in requests signed with the operator's key."""
    broker = _broker_of(cluster)
    if cluster.operator is None:
        raise RuntimeError("run `operator init` first")
    for keyset in node.keysets:
        response = httpx.post(
            broker.url + "/v1/participants",
            json={
                "id": keyset.participant,
                "kind": "focal_point",
                "country": country,
                "inbox_url": node.inbox_url,
                "keys": keyset.public(),
            },
            auth=SignedRequests(cluster.operator.signing),
            timeout=10,
        )
        response.raise_for_status()


def register_auditor(cluster: LocalCluster, participant: str, country: str) -> Path:
    """An auditor (e.g. a national rapporteur), registered by the operator; its key file."""
    broker = _broker_of(cluster)
    if cluster.operator is None:
        raise RuntimeError("run `operator init` first")
    keyset = KeySet.generate(participant)
    path = cluster.workdir / f"{participant}.keys.json"
    keyset.write(path)
    body = {"id": participant, "kind": "auditor", "country": country, "keys": keyset.public()}
    response = httpx.post(
        broker.url + "/v1/participants",
        json=body,
        auth=SignedRequests(cluster.operator.signing),
        timeout=10,
    )
    response.raise_for_status()
    return path


def verify_ledger(cluster: LocalCluster, auditor_key: Path, entries: int) -> Checkpoint:
    """`trm-broker ledger verify`, once the sequencer has integrated ``entries`` entries."""
    broker = _broker_of(cluster)
    vkey = httpx.get(broker.url + "/v1/broker", timeout=5).json()["ledger"]["verifier_key"]

    def check() -> Checkpoint | None:
        checkpoint = verify(broker.url, vkey, auditor_key, None)
        return checkpoint if checkpoint.size >= entries else None

    return _eventually("the ledger to integrate every entry", check)


def send_referral(sender: Node, case_ref: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        sender.url + "/messages",
        json={
            "type": "referral",
            "case_ref": case_ref,
            "recipient": RECIPIENT,
            "header": {"destination_country": "NG", "subject_is_minor": False},
            "payload": payload,
            "data_categories": ["identity", "health"],
        },
        headers={"authorization": f"Bearer {sender.api_token}"},
        timeout=15,
    )
    if response.status_code != 201:
        raise RuntimeError(f"the sending node refused: {response.status_code} {response.text}")
    result: dict[str, Any] = response.json()
    return result


def wait_acknowledged(cluster: LocalCluster, message_id: str, party: Node) -> dict[str, Any]:
    """Poll the message's state, asked by one of its parties (reads are signed and scoped)."""
    broker = _broker_of(cluster)
    url = f"{broker.url}/v1/messages/{message_id}"
    auth = SignedRequests(party.keysets[0].signing)

    def check() -> dict[str, Any] | None:
        status: dict[str, Any] = httpx.get(url, timeout=5, auth=auth).json()
        return status if status.get("status") == "acknowledged" else None

    return _eventually("the recipient's acknowledgement", check)


def wait_received(node: Node, message_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        response = httpx.get(
            node.url + "/messages",
            headers={"authorization": f"Bearer {node.api_token}"},
            timeout=5,
        )
        for message in response.json()["messages"]:
            if message["message_id"] == message_id:
                found: dict[str, Any] = message
                return found
        return None

    return _eventually("the message at the destination node", check)


def run(echo: Callable[[str], None] = print) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trm-demo-") as tmp, LocalCluster(Path(tmp)) as cluster:
        echo("trm-broker demo: one referral from Austria to Nigeria, through real processes\n")
        cluster.migrate()
        operator = cluster.init_operator()
        broker = cluster.start_broker()
        echo(f"  broker            {broker.url}  (SQLite, schema migrated)")
        echo(f"  operator          {operator.participant}  (`trm-broker operator init`)")
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT])
        echo(f"  node Austria      {at.url}  serves {SENDER}")
        echo(f"  node Nigeria      {ng.url}  serves {RECIPIENT}")
        register(cluster, at, "AT")
        register(cluster, ng, "NG")
        auditor_key = register_auditor(cluster, AUDITOR, "AT")
        echo("  registry          both focal points registered with their Ed25519 and X25519")
        echo("                    keys, in requests signed by the operator (RFC 9421)\n")

        sent = send_referral(at, "AT-2026-DEMO-0001", DEMO_REFERRAL)
        echo(f"1. {SENDER} sealed a referral to {RECIPIENT}'s X25519 key (HPKE), signed it")
        echo("   (JWS, EdDSA) and sent it to the broker in a signed request (RFC 9421).")
        echo("2. The broker verified the signature and answered a signed receipt:")
        echo(f"     message id      {sent['message_id']}")
        echo(f"     envelope digest {sent['envelope_digest']}")
        echo(f"     accepted at     {sent['accepted_at']}")
        echo(f"   ({SENDER}'s node checked the receipt's signature against the broker's key.)")
        status = wait_acknowledged(cluster, sent["message_id"], at)
        delivery = status["delivery"]
        echo(
            f"3. The broker pushed it, signed with its key, to {RECIPIENT}'s inbox:\n   "
            f"{delivery['status']} after "
            f"{delivery['attempts']} attempt(s), at {delivery['acknowledged_at']}."
        )
        received = wait_received(ng, sent["message_id"])
        echo("4. The Nigerian node checked the broker's receipt and the sender's signature,")
        echo("   opened the payload with its private key and signed an acknowledgement.")
        echo("   Its case workers now see:")
        echo(
            f"     type {received['type']}, case {received['case_ref']}, from {received['sender']}"
        )
        payload = received["payload"]
        echo(
            f"     form of exploitation: {payload['form_of_exploitation']}; "
            f"needs: {', '.join(payload['immediate_needs'])}; "
            f"interpreter: {'yes' if payload['interpreter_needed'] else 'no'}"
        )
        if payload != DEMO_REFERRAL:
            raise RuntimeError("the payload opened at the destination differs from what was sent")
        echo("   The payload opened at the destination is exactly what was sent.")
        # bootstrap, three registrations, accepted, acknowledged
        checkpoint = verify_ledger(cluster, auditor_key, 6)
        echo(f"5. The auditor {AUDITOR} ran `trm-broker ledger verify`: every entry fetched,")
        echo("   every leaf and the root recomputed, the broker's signed checkpoint checked:")
        for line in checkpoint.body().splitlines():
            echo(f"     {line}")
        echo("   (origin, tree size, root hash: C2SP tlog-checkpoint, signed by the broker)")
        echo(f"\nDone in {time.monotonic() - started:.1f} s; all processes stopped, files removed.")
