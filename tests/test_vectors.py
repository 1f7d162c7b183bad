"""The published test vectors: this package and the standalone script in contracts/ reach
the expected verdict on every case, for the committed set and for a freshly made one."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jsonschema import Draft202012Validator

from trm_broker.contract.vectors import write
from trm_broker.crypto import envelopes, jws
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.envelopes import KeyRecord
from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.http_signatures import SignedRequest, check_signed_request, signature_keyid
from trm_broker.crypto.keys import encryption_key_from_secret, load_ed25519_public
from trm_broker.delivery.acknowledgement import ACK_CODES, AckRefused, check_ack, parse_ack
from trm_broker.domain.participants import KeyUse
from trm_broker.domain.signed_objects import AckClaims, RejectionCode
from trm_broker.node.broker_client import BrokerKey, RegisteredKey
from trm_broker.store.models import ParticipantKey

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
COMMITTED = CONTRACTS / "vectors" / "vectors.json"
SCRIPT = CONTRACTS / "verify_vectors.py"

# The verdicts below come from the product's own verifiers (crypto/envelopes.py and
# crypto/http_signatures.check_signed_request), the very code the broker and the nodes
# call; this file only feeds them the vectors' registry, broker key and private keys.


def _registry(vectors: dict[str, Any]) -> dict[str, KeyRecord]:
    keys = (RegisteredKey.from_json(e, e["participant"]) for e in vectors["registry"])
    return {
        k.kid: KeyRecord(
            k.kid, k.participant, k.use, k.public, k.valid_from, k.valid_until, k.revoked_at
        )
        for k in keys
    }


def _keys(vectors: dict[str, Any]) -> envelopes.KeyLookup:
    registry = _registry(vectors)

    async def lookup(kid: str) -> KeyRecord | None:
        return registry.get(kid)

    return lookup


async def _envelope(case: dict[str, Any], vectors: dict[str, Any], now: datetime) -> Any:
    verified = await envelopes.verify_envelope(case["envelope"], _keys(vectors), at=now)
    kid = verified.envelope.sealed.kid
    entry = next((e for e in vectors["registry"] if e["kid"] == kid), None)
    if entry is None or kid not in vectors["private_keys"]:
        raise VerificationError(code=Code.SEAL_DOES_NOT_OPEN)
    private = encryption_key_from_secret(entry["alg"], vectors["private_keys"][kid])
    _, payload = envelopes.open_payload(verified.envelope, private)
    return {"valid": True, "payload": payload}


async def _receipt(case: dict[str, Any], vectors: dict[str, Any], now: datetime) -> Any:
    broker = vectors["broker"]

    async def signers(kid: str) -> BrokerKey | None:
        return (
            BrokerKey(kid, load_ed25519_public(broker["public"])) if kid == broker["kid"] else None
        )

    await envelopes.verify_receipt(case["receipt"], case["envelope"], signers)
    return {"valid": True}


async def _request(case: dict[str, Any], vectors: dict[str, Any], now: datetime) -> Any:
    request = case["request"]
    headers = [(name, value) for name, value in request["headers"]]
    registry = _registry(vectors)

    async def resolve(keyid: str, at: datetime) -> Ed25519PublicKey:
        key = registry.get(keyid)
        if key is None or key.use != "sig":
            raise VerificationError(code=Code.UNKNOWN_KEY)
        if not key.valid_at(at):
            raise VerificationError(code=Code.KEY_NOT_USABLE)
        return load_ed25519_public(key.public)

    async def spend(keyid: str, signed: SignedRequest, at: datetime) -> bool:
        return True  # each case is a first use

    keyid = signature_keyid(headers)
    assert keyid is not None
    await check_signed_request(
        request["method"],
        request["target_uri"],
        headers,
        b64url_decode(request["body"]),
        keyid,
        now=now,
        window=timedelta(seconds=vectors["request_window_seconds"]),
        resolve=resolve,
        spend=spend,
    )
    return {"valid": True}


def our_verdict(case: dict[str, Any], vectors: dict[str, Any]) -> dict[str, Any]:
    """The product's verdict on a case, and the stable code of a refusal."""
    now = datetime.fromisoformat(vectors["now"])
    check = {
        "envelope": _envelope,
        "receipt": _receipt,
        "request": _request,
        "acknowledgement": _acknowledgement,
    }[case["kind"]]
    try:
        return dict(asyncio.run(check(case, vectors, now)))
    except VerificationError as refused:
        return {"valid": False, "error": refused.code.value}


def _cases(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    vectors = json.loads(path.read_text(encoding="utf-8"))
    return [(case, vectors) for case in vectors["cases"]]


@pytest.mark.parametrize(
    ("case", "vectors"), _cases(COMMITTED), ids=[c["name"] for c, _ in _cases(COMMITTED)]
)
def test_this_package_reaches_each_committed_verdict(
    case: dict[str, Any], vectors: dict[str, Any]
) -> None:
    assert our_verdict(case, vectors) == case["expect"]


def test_every_code_the_vectors_name_is_one_the_product_raises() -> None:
    refused = [c for c, _ in _cases(COMMITTED) if not c["expect"]["valid"]]
    named = {c["expect"]["error"] for c in refused if c["kind"] != "acknowledgement"}
    assert named <= {code.value for code in Code}
    # acknowledgements are refused with the broker's delivery codes (a delivery's last_error)
    assert {c["expect"]["error"] for c in refused if c["kind"] == "acknowledgement"} <= set(
        ACK_CODES
    )
    # and the standalone script refuses with no code the product lacks
    script_codes = set(re.findall(r'Refused\("([a-z-]+)"\)', SCRIPT.read_text(encoding="utf-8")))
    assert script_codes <= {code.value for code in Code}


def test_the_committed_set_covers_the_published_cases() -> None:
    names = {case["name"] for case, _ in _cases(COMMITTED)}
    for expected in [
        "envelope/valid-x25519",
        "envelope/valid-mlkem768-x25519",
        "envelope/flipped-signature-bit",
        "envelope/wrong-kid",
        "envelope/revoked-key",
        "envelope/moved-ciphertext",
        "receipt/valid",
        "request/valid",
        "request/revoked-key",
    ]:
        assert expected in names


def run_script(vectors: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A copy outside the repository, run in isolated mode: it sees only installed packages.
    script = tmp_path / "verify_vectors.py"
    shutil.copy(SCRIPT, script)
    return subprocess.run(
        [sys.executable, "-I", str(script), str(vectors)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )


def test_the_standalone_script_agrees_on_the_committed_vectors(tmp_path: Path) -> None:
    result = run_script(COMMITTED, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = len(_cases(COMMITTED))
    assert f"{cases} of {cases} cases as expected" in result.stdout


def test_a_fresh_set_from_the_code_verifies_both_ways(tmp_path: Path) -> None:
    fresh = write(tmp_path / "fresh.json")
    assert run_script(fresh, tmp_path).returncode == 0
    for case, vectors in _cases(fresh):
        assert our_verdict(case, vectors) == case["expect"], case["name"]


def test_the_script_fails_when_a_verdict_is_wrong(tmp_path: Path) -> None:
    vectors = json.loads(COMMITTED.read_text(encoding="utf-8"))
    vectors["cases"][0]["expect"] = {"valid": False, "error": "bad-signature"}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(vectors), encoding="utf-8")
    result = run_script(broken, tmp_path)
    assert result.returncode == 1
    assert "FAIL envelope/valid-x25519" in result.stdout


def test_the_script_imports_only_cryptography_rfc8785_and_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported = {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    } | {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) <= {"cryptography", "rfc8785", "__future__"}


# --- acknowledgements: the broker's own check (delivery/acknowledgement.py) ---------------


async def _acknowledgement(
    case: dict[str, Any], vectors: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The verdict of the broker's check of an answer, its key looked up in the vectors'
    registry as the broker looks it up in its own."""
    registry = {
        e["kid"]: ParticipantKey(
            kid=e["kid"],
            participant_id=e["participant"],
            use=KeyUse(e["use"]),
            alg=e["alg"],
            public_key=e["public"],
            valid_from=datetime.fromisoformat(e["valid_from"]),
            valid_until=e["valid_until"] and datetime.fromisoformat(e["valid_until"]),
            revoked_at=e["revoked_at"] and datetime.fromisoformat(e["revoked_at"]),
        )
        for e in vectors["registry"]
    }
    envelope = case["envelope"]
    message = json.loads(b64url_decode(envelope["payload"]))
    try:
        parsed = parse_ack(case["ack"])
        claims = check_ack(
            parsed,
            registry.get(parsed.kid),
            message["id"],
            message["recipient"],
            jws.digest(envelope),
            now,
        )
    except AckRefused as refused:  # the broker's delivery codes (``ack_*``)
        return {"valid": False, "error": refused.code}
    if claims.code is not None:  # the node's reason for a rejection
        return {"valid": True, "status": claims.status, "code": claims.code}
    return {"valid": True, "status": claims.status}


def test_the_acknowledgement_vectors_show_both_answers_and_every_refusal_code() -> None:
    acks = [case for case, _ in _cases(COMMITTED) if case["kind"] == "acknowledgement"]
    assert {c["expect"].get("status") for c in acks if c["expect"]["valid"]} == {
        "received",
        "rejected",
    }
    # A rejection says why: each of the node's codes has a vector.
    assert {c["expect"].get("code") for c in acks if c["expect"]["valid"]} == {
        None,
        *get_args(RejectionCode),
    }
    assert {c["expect"]["error"] for c in acks if not c["expect"]["valid"]} == set(ACK_CODES)


def test_a_valid_acknowledgement_vector_fits_the_published_schema() -> None:
    schema = json.loads((CONTRACTS / "schemas" / "acknowledgement.v1.json").read_text())
    validator = Draft202012Validator(schema)
    for case, _ in _cases(COMMITTED):
        if case["kind"] == "acknowledgement" and case["expect"]["valid"]:
            claims = jws.parse(case["ack"], jws.TYP_ACK).claims()
            assert [e.message for e in validator.iter_errors(claims)] == [], case["name"]
            assert AckClaims.model_validate(claims).status == case["expect"]["status"]
