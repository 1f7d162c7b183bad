"""One table from verification codes to problems, used by the broker and the node alike,
so the same fault gets the same status and ``type`` wherever it is found.

A code has two columns: what a signed object *in the body* (an envelope, a receipt) is
answered with, and what *the request's own signature* (RFC 9421) is answered with. They
differ where the faults do: a request whose key is unknown is not authenticated (401), while
an envelope whose key is unknown comes in an authenticated request from a sender the
registry does not know (403). ``contracts/README.md`` ("Error codes") publishes the table.

The problem's ``detail`` is the check's own fixed text (it says what to fix and never quotes
the input); ``kid`` is added only for a key the registry knows, ``fields`` for a schema
mismatch (locations only).
"""

from __future__ import annotations

from typing import Any

from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.web.problems import (
    BadSignature,
    Forbidden,
    InvalidEnvelope,
    KeyNotProven,
    KeyNotUsable,
    Problem,
    ReplayedRequest,
    Unauthenticated,
    UnknownSender,
)

#: Signed objects in the body: envelopes (broker and node) and the broker's receipts (node).
OBJECT_PROBLEMS: dict[Code, type[Problem]] = {
    Code.MALFORMED: InvalidEnvelope,
    Code.UNSUPPORTED_ALG: InvalidEnvelope,
    Code.WRONG_TYP: InvalidEnvelope,
    Code.NOT_CANONICAL: InvalidEnvelope,
    Code.SCHEMA_MISMATCH: InvalidEnvelope,
    Code.STALE: InvalidEnvelope,
    Code.SEAL_DOES_NOT_OPEN: InvalidEnvelope,
    Code.UNKNOWN_KEY: UnknownSender,
    Code.KEY_NOT_USABLE: UnknownSender,
    # A node that pins the operator's keys (node/trust.py): the registry lists the key, but
    # no operator's statement backs it, as if written straight into the broker's database.
    Code.KEY_NOT_PROVEN: KeyNotProven,
    Code.BAD_SIGNATURE: BadSignature,
    Code.DIGEST_MISMATCH: BadSignature,
    Code.NOT_BROKER_KEY: BadSignature,
    # The signature is valid and made by a registered participant's current key: who signed
    # is proven (so not 401, "who are you?"), but that participant may not speak for the
    # sender it names. That is a refusal to an identified party: 403 (RFC 9110 §15.5.4).
    # The broker answered this 403 and the node 401 before the verifiers were one.
    Code.SENDER_MISMATCH: Forbidden,
}

#: The request's own signature (RFC 9421): every failure is 401, the caller is not
#: authenticated; the type says why.
REQUEST_PROBLEMS: dict[Code, type[Problem]] = {
    Code.MALFORMED: BadSignature,
    Code.BAD_SIGNATURE: BadSignature,
    Code.DIGEST_MISMATCH: BadSignature,
    Code.STALE: BadSignature,
    Code.UNKNOWN_KEY: Unauthenticated,
    Code.NOT_BROKER_KEY: Unauthenticated,
    Code.KEY_NOT_USABLE: KeyNotUsable,
    Code.REPLAYED: ReplayedRequest,
}


def _problem(table: dict[Code, type[Problem]], error: VerificationError) -> Problem:
    extensions: dict[str, Any] = {}
    if error.kid is not None:
        extensions["kid"] = error.kid
    if error.fields:
        extensions["fields"] = list(error.fields)
    detail = str(error) or "The signature does not verify."
    return table.get(error.code, BadSignature)(_sentence(detail), **extensions)


def object_problem(error: VerificationError) -> Problem:
    """The problem answering a refused envelope or receipt."""
    return _problem(OBJECT_PROBLEMS, error)


def request_problem(error: VerificationError) -> Problem:
    """The problem answering a request whose signature was refused."""
    return _problem(REQUEST_PROBLEMS, error)


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."
