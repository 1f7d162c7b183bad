"""Backup and restore (issue 7), as docs/operations.md tells an operator to do it: a real
broker on PostgreSQL takes referrals that a real node acknowledges; its database is dumped with
`pg_dump -Fc` while it serves, and its key file copied; both are restored elsewhere (a
fresh database, `pg_restore`), a broker is started on them, and the auditor's
`trm-broker ledger verify` passes against it: the same checkpoint (size and root), signed
by the same key, consistent with the state the auditor kept from before the backup. The
restored broker then goes on appending to the same tree.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support import referral
from trm_broker.cli.ledger_reader import verify
from trm_broker.crypto.keys import KeySet
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster
from trm_broker.web.signed_requests import SignedRequests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

AT, NG = "at.focal-point", "ng.naptip"
REFERRALS = 3
#: The operator's bootstrap, three registrations (two focal points, the auditor), then a
#: consent, an acceptance and an acknowledgement per referral.
ENTRIES = 1 + 3 + 3 * REFERRALS
PAYLOAD = {
    "destination_country": "NG",
    "identification_summary": "Fictional person for the backup test.",
    "form_of_exploitation": "forced_labour",
    "immediate_needs": ["shelter"],
    "languages": ["en"],
    "interpreter_needed": False,
    "is_child": False,
}


def _libpq(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string, for pg_dump and pg_restore."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@pytest.fixture
def restore_target(empty_postgres_database: str) -> str:
    """A fresh, empty PostgreSQL database to restore into (as on a new server)."""
    return empty_postgres_database


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} (PostgreSQL client tools) is needed for this test"
    return path


def _ledger_verify(broker_url: str, vkey: str, auditor_key: Path, state: Path) -> str:
    """`trm-broker ledger verify`, as the auditor runs it; its output."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "trm-broker"),
            *("ledger", "verify", "--url", broker_url, "--broker-key", vkey),
            *("--key", str(auditor_key), "--state", str(state)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _consent(case_ref: str) -> dict[str, object]:
    return {
        "id": f"consent-{case_ref}",
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": ["referral"],
        "recipients": [NG],
        "data_categories": ["identity", "other"],  # what the referral's payload holds
        "valid_from": "2026-01-01T00:00:00Z",
        "form_digest": "sha-256:" + "C" * 43,
    }


def _refer(broker_url: str, at: KeySet, ng: KeySet, case_ref: str) -> str:
    """Austria's referral under its consent, in requests signed by Austria: its id."""
    as_at = SignedRequests(at.signing)
    response = httpx.post(broker_url + "/v1/consents", json=_consent(case_ref), auth=as_at)
    assert response.status_code == 201, response.text
    response = httpx.post(
        broker_url + "/v1/messages",
        content=json.dumps(referral(at, ng, case_ref=case_ref, payload=PAYLOAD)).encode(),
        headers={"content-type": "application/jose+json"},
        auth=as_at,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    message_id: str = response.json()["message_id"]
    return message_id


def test_a_restored_dump_and_key_file_verify_as_the_same_ledger(
    tmp_path: Path, postgres_database: str, restore_target: str
) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    auditor_state = tmp_path / "auditor" / "state.json"
    at = KeySet.generate(AT)

    # 1. A broker in service: referrals from Austria (its keys here) to Nigeria, each
    # acknowledged by the Nigerian node, and an auditor who has verified the ledger and
    # kept its state.
    with LocalCluster(tmp_path / "site-a", broker_database_url=postgres_database) as cluster:
        assert cluster.operator is None
        operator = SignedRequests(cluster.init_operator().signing)
        broker = cluster.start_broker()
        body = {"id": AT, "kind": "focal_point", "country": "AT", "keys": at.public()}
        assert cluster.operator is not None
        body["statements"] = demo.stated(cluster.operator, at)
        response = httpx.post(broker.url + "/v1/participants", json=body, auth=operator)
        assert response.status_code == 201, response.text
        node = cluster.start_node("node-ng", [NG])
        demo.register(cluster, node, "NG")
        ng = node.keysets[0]
        auditor_key = demo.register_auditor(cluster, "at.rapporteur", "AT")
        for number in range(REFERRALS):
            message_id = _refer(broker.url, at, ng, f"AT-2026-BAK-{number:04d}")
            demo.wait_acknowledged(cluster, message_id, node)
        before = demo.verify_ledger(cluster, auditor_key, ENTRIES)
        assert before.size == ENTRIES
        vkey = httpx.get(broker.url + "/v1/broker", timeout=5).json()["ledger"]["verifier_key"]
        assert verify(broker.url, vkey, auditor_key, auditor_state) == before

        # 2. The backup, taken while the broker serves: the database (custom format) and
        # the broker's key file, which signs receipts, pushes and checkpoints.
        subprocess.run(
            [
                _tool("pg_dump"),
                "--format=custom",
                f"--file={backup / 'trm-broker.dump'}",
                f"--dbname={_libpq(postgres_database)}",
            ],
            check=True,
            timeout=60,
        )
        shutil.copy2(cluster.workdir / "broker-key.json", backup / "broker-key.json")

    # 3. Site A is gone. Restore into a fresh database, put the key file back, and start.
    subprocess.run(
        [
            _tool("pg_restore"),
            "--no-owner",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={_libpq(restore_target)}",
            str(backup / "trm-broker.dump"),
        ],
        check=True,
        timeout=60,
    )
    site_b = tmp_path / "site-b"
    site_b.mkdir()
    shutil.copy2(backup / "broker-key.json", site_b / "broker-key.json")
    with LocalCluster(site_b, broker_database_url=restore_target) as cluster:
        broker = cluster.start_broker()  # it refuses a schema that is not current
        assert httpx.get(broker.url + "/readyz", timeout=5).status_code == 200
        info = httpx.get(broker.url + "/v1/broker", timeout=5).json()
        assert info["ledger"]["verifier_key"] == vkey  # the same key signs its checkpoints

        # 4. The auditor's check: the same checkpoint (size and root), consistent with what
        # they verified before the backup.
        root = base64.b64encode(before.root).decode()
        output = _ledger_verify(broker.url, vkey, auditor_key, auditor_state)
        assert f"{ENTRIES} entries, root {root}" in output

        # 5. The restored broker goes on where the backup ended: a new referral is
        # accepted, and the ledger extends the same tree (the earlier state is consistent
        # with the new checkpoint).
        _refer(broker.url, at, ng, "AT-2026-BAK-AFTER")
        extended = demo.verify_ledger(cluster, auditor_key, ENTRIES + 2)
        assert extended.size == ENTRIES + 2  # its consent and its acceptance
        assert verify(broker.url, vkey, auditor_key, auditor_state) == extended
