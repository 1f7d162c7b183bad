"""The one table from verification codes to problems: complete, and answering each code
with the check's own fixed text and only the facts an answer may carry."""

from __future__ import annotations

from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.web.refusals import (
    OBJECT_PROBLEMS,
    REQUEST_PROBLEMS,
    object_problem,
    request_problem,
)


def test_every_code_of_a_signed_object_has_its_problem() -> None:
    assert set(OBJECT_PROBLEMS) == set(Code) - {Code.REPLAYED}


def test_every_request_signature_refusal_is_401() -> None:
    assert {problem.status for problem in REQUEST_PROBLEMS.values()} == {401}


def test_a_key_that_is_not_the_senders_is_forbidden_wherever_it_is_found() -> None:
    problem = object_problem(
        VerificationError(
            "Key k belongs to a, not to sender b.", code=Code.SENDER_MISMATCH, kid="k"
        )
    )
    assert (problem.status, problem.slug) == (403, "forbidden")
    assert problem.body()["kid"] == "k"


def test_a_schema_mismatch_lists_the_fields_to_fix() -> None:
    error = VerificationError(
        "The envelope does not match the schema; fix: case_ref.",
        code=Code.SCHEMA_MISMATCH,
        fields=("case_ref",),
    )
    body = object_problem(error).body()
    assert (body["status"], body["fields"]) == (400, ["case_ref"])
    assert body["detail"] == "The envelope does not match the schema; fix: case_ref."


def test_a_refusal_without_a_registry_key_names_no_kid() -> None:
    body = request_problem(VerificationError("unknown key", code=Code.UNKNOWN_KEY)).body()
    assert (body["status"], body["type"]) == (401, "urn:trm-broker:problem:unauthenticated")
    assert "kid" not in body
    assert body["detail"] == "unknown key."
