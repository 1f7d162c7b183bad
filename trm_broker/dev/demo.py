"""`trm-broker demo`: a broker and two NRM nodes as real processes, and one real referral.

Everything in it is fictional. It runs on SQLite files in a temporary folder and removes
them when it ends.
"""

from __future__ import annotations

import secrets
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from trm_broker.cli.ledger_reader import verify
from trm_broker.crypto import key_statements
from trm_broker.crypto.keys import KeySet
from trm_broker.dev.cluster import LocalCluster, Node, Process
from trm_broker.dev.demo_case import (
    DEMO_REFERRAL,
    RECIPIENT,
    SENDER,
    SHELTER,
    WAIT_FOR_RECEIPT,
    CaseRun,
    consent_body,
    play_case,
)
from trm_broker.ledger.note import Checkpoint
from trm_broker.web.signed_requests import SignedRequests

T = TypeVar("T")

AUDITOR = "at.rapporteur"  # Austria's national rapporteur on trafficking


def eventually(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
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


def stated(operator: KeySet, keyset: KeySet) -> list[dict[str, str]]:
    """The operator's statements of a key set's two keys, sent with its registration: the
    demo's nodes pin the operator's key and believe no key without one."""
    return key_statements.for_key_set(
        operator.signing, keyset.participant, keyset.public(), datetime.now(UTC)
    )


def register(
    cluster: LocalCluster, node: Node, country: str, kinds: dict[str, str] | None = None
) -> None:
    """Register the node's participants (focal points unless ``kinds`` says otherwise), in
    requests signed with the operator's key."""
    broker = _broker_of(cluster)
    if cluster.operator is None:
        raise RuntimeError("run `operator init` first")
    for keyset in node.keysets:
        response = httpx.post(
            broker.url + "/v1/participants",
            json={
                "id": keyset.participant,
                "kind": (kinds or {}).get(keyset.participant, "focal_point"),
                "country": country,
                "inbox_url": node.inbox_url,
                "keys": keyset.public(),
                "statements": stated(cluster.operator, keyset),
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
    body = {
        "id": participant,
        "kind": "auditor",
        "country": country,
        "keys": keyset.public(),
        "statements": stated(cluster.operator, keyset),
    }
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

    return eventually("the ledger to integrate every entry", check)


def send_referral(sender: Node, case_ref: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A referral under a consent registered for it first (no consent, no transfer)."""
    now = datetime.now(UTC)
    consent = consent_body(case_ref, f"consent-{case_ref}", now)
    registered = httpx.post(
        sender.url + "/consents",
        json={"consent": consent},
        headers={"authorization": f"Bearer {sender.api_token}"},
        timeout=15,
    )
    if registered.status_code != 201:
        raise RuntimeError(f"the consent was refused: {registered.text}")
    response = httpx.post(
        sender.url + "/messages",
        json={
            "type": "referral",
            "case_ref": case_ref,
            "recipient": RECIPIENT,
            "payload": payload,  # the node computes the header from it
            "consent_ref": consent["id"],
        },
        headers={"authorization": f"Bearer {sender.api_token}", "prefer": WAIT_FOR_RECEIPT},
        timeout=20,
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

    return eventually("the recipient's acknowledgement", check)


def wait_acknowledged_at_senders(case: CaseRun, nodes: dict[str, Node]) -> dict[str, int]:
    """Wait until every message of ``case`` is acknowledged as its sender's node shows it to
    that organisation's case worker (`GET /sent`, kept current by the node's status tracker);
    how many each organisation sent."""
    wanted = {message_id for _, message_id in case.sent}

    def check() -> dict[str, int] | None:
        acknowledged: dict[str, set[str]] = {}
        for organisation, node in nodes.items():
            response = httpx.get(
                node.url + "/sent",
                params={"case_ref": case.case_ref, "limit": 500},
                headers={"authorization": f"Bearer {node.token_for(organisation)}"},
                timeout=10,
            )
            response.raise_for_status()
            acknowledged[organisation] = {
                m["message_id"]
                for m in response.json()["messages"]
                if m["status"] == "acknowledged" and m["message_id"] in wanted
            }
        if set().union(*acknowledged.values()) != wanted:
            return None
        return {organisation: len(ids) for organisation, ids in acknowledged.items()}

    return eventually("every message acknowledged at its sender's node", check)


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

    return eventually("the message at the destination node", check)


def run(echo: Callable[[str], None] = print, *, serve: bool = False) -> None:
    """Play the demo case through real processes. With ``serve``, keep them running
    afterwards, with a password for each organisation's case worker, until interrupted."""
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="trm-demo-") as tmp,
        LocalCluster(
            # The nodes read their sent messages' fate at the broker every 2 s (default 10 s).
            Path(tmp),
            extra_env={"TRM_NODE_STATUS_POLL_SECONDS": "2"},
        ) as cluster,
    ):
        echo("trm-broker demo: a whole case from Austria to Nigeria, through real processes\n")
        cluster.migrate()
        operator = cluster.init_operator()
        broker = cluster.start_broker()
        echo(f"  broker            {broker.url}  (SQLite, schema migrated)")
        echo(f"  operator          {operator.participant}  (`trm-broker operator init`)")
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT, SHELTER])
        echo(f"  node Austria      {at.url}  serves {SENDER}")
        echo(f"  node Nigeria      {ng.url}  serves {RECIPIENT}, {SHELTER}")
        for node in (at, ng):  # as a real deployment should (docs/node.md)
            trust = httpx.get(node.url + "/healthz", timeout=5).json()
            if (trust.get("broker_keys"), trust.get("registry_keys")) != (
                "pinned",
                "operator-signed",
            ):
                raise RuntimeError(f"the node at {node.url} does not pin the broker's keys")
        echo("  pins              both nodes pin the broker's key and the operator's: they")
        echo("                    believe no receipt, push or registry key those do not back")
        register(cluster, at, "AT")
        register(cluster, ng, "NG", kinds={SHELTER: "receiving_org"})
        auditor_key = register_auditor(cluster, AUDITOR, "AT")
        echo("  registry          focal points, the shelter (receiving organisation) and an")
        echo("                    auditor, registered in requests signed by the operator\n")

        echo("The case (every message sealed to its recipient, signed, and signed again in")
        echo("the request; the broker checks consent and the TRM workflow before accepting):")
        case = play_case(at, ng, "AT-2026-DEMO-0001", echo)
        fates = wait_acknowledged_at_senders(case, {SENDER: at, RECIPIENT: ng, SHELTER: ng})
        echo(f"  all {len(case.sent)} messages delivered, opened and acknowledged by recipients,")
        echo("  as each sender's node shows it to its own case worker (GET /sent):")
        for organisation, count in fates.items():
            echo(f"     {organisation:<17} {count} acknowledged")
        echo("  every step after the referral named no consent: the node filled it in")
        received = wait_received(ng, case.sent[0][1])
        if received["payload"] != DEMO_REFERRAL:
            raise RuntimeError("the payload opened at the destination differs from what was sent")
        echo("  the referral opened in Nigeria is exactly what Austria sent")
        sent_by_at = httpx.get(
            f"{at.url}/outbox",
            params={"case_ref": case.case_ref},
            headers={"authorization": f"Bearer {at.api_token}"},
            timeout=10,
        ).json()["messages"]
        states = Counter(message["state"] for message in sent_by_at)
        echo(
            f"  Austria's outbox: {states['receipted']} receipted, {states['refused']} refused,"
            f" {states['queued']} still queued (the refused steps above, each with what to"
        )
        echo("                    fix; the early return plan counts twice: its copy for the")
        echo("                    shelter was refused with it)\n")

        timeline = httpx.get(
            f"{at.url}/cases/{case.case_ref}",
            headers={"authorization": f"Bearer {at.api_token}"},
            timeout=10,
        ).json()["broker"]  # the node's case view holds the broker's
        echo(f"Case {case.case_ref} at the broker: stage {timeline['stage']} (metadata only)")
        for item in timeline["timeline"]:
            echo(
                f"  {item['accepted_at'][11:19]}  {item['type']:<23} "
                f"{item['sender']} -> {item['recipient']}"
            )
        # bootstrap, four registrations, the consent, then each message accepted and acked
        checkpoint = verify_ledger(cluster, auditor_key, 6 + 2 * len(case.sent))
        echo(f"\nThe auditor {AUDITOR} ran `trm-broker ledger verify`: every entry fetched,")
        echo("every leaf and the root recomputed, the broker's signed checkpoint checked:")
        for line in checkpoint.body().splitlines():
            echo(f"     {line}")
        if serve:
            echo(f"\nDone in {time.monotonic() - started:.1f} s.")
            serve_until_stopped(
                cluster, {SENDER: at, RECIPIENT: ng, SHELTER: ng}, auditor_key, echo
            )
        else:
            echo(
                f"\nDone in {time.monotonic() - started:.1f} s; all processes stopped,"
                " files removed."
            )
    if serve:
        echo("All processes stopped, files removed.")
    else:
        echo("To see this case in a browser, run")
        echo("  make demo SERVE=1      (or: .venv/bin/trm-broker demo --serve)")
        echo("It plays the case again and keeps the processes running until Ctrl-C. It prints")
        echo("each node's web app address (http://127.0.0.1:<port>/web/) and a password made")
        echo("for the run, to sign in as")
        for organisation, who in (
            (SENDER, "Austria's case worker"),
            (RECIPIENT, "NAPTIP's case worker"),
            (SHELTER, "the shelter's worker"),
        ):
            echo(f"  case-worker@{organisation:<17} {who}")


def serve_until_stopped(
    cluster: LocalCluster,
    nodes: dict[str, Node],
    auditor_key: Path,
    echo: Callable[[str], None],
) -> None:
    """Keep the demo's processes running for people to sign in to the nodes' web apps,
    each organisation's case worker with a password made for this run, and to the broker's
    console as the demo's auditor, until Ctrl-C or SIGTERM."""
    password = "demo-" + secrets.token_urlsafe(9)
    echo("\nThe processes keep running. Sign in to a node's web app in a browser:")
    for organisation, node in nodes.items():
        user = f"case-worker@{organisation}"
        cluster.set_password(node, user, password)
        echo(f"  {organisation:<17} {node.url}/web/  user {user}")
    echo(f"  password          {password}  (the same for each, made for this run only)")
    broker = _broker_of(cluster)
    # The ledger's key as the demo's verification read it; an auditor has it out of band.
    vkey = httpx.get(broker.url + "/v1/broker", timeout=5).json()["ledger"]["verifier_key"]
    login = cluster.console_login(auditor_key, vkey)
    echo(f"\nThe auditors' console: {broker.url}/console/  Sign in as the auditor {AUDITOR}")
    echo("with this one-time link (valid 2 minutes):")
    echo(f"  {login}")
    echo("or make a new one with the auditor's key, as an auditor does:")
    echo(
        f"  .venv/bin/trm-broker console login --key {auditor_key} --broker {broker.url}"
        f" --broker-key {vkey}"
    )
    echo("\nPress Ctrl-C to stop.")
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            if not all(process.running for process in cluster.processes):
                echo("A process of the demo stopped; stopping the rest.")
                return
    except KeyboardInterrupt:
        echo("")
    finally:
        signal.signal(signal.SIGTERM, previous)
