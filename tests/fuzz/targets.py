"""The fuzz targets: each takes bytes, calls the real parser, and lets through only the
refusals that parser documents. Any other exception, or a broken property (an
``AssertionError``), is a crash.

Each target returns whether the parser accepted the input (False: it refused it), so the
runner can say how much of what it tried got past the parser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from tests.fuzz import seeds
from tests.fuzz.seeds import Seed
from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json, parse_canonical_json
from trm_broker.crypto.errors import MalformedError, VerificationError
from trm_broker.domain.envelope import Envelope
from trm_broker.ledger.note import Checkpoint, open_checkpoint, open_note
from trm_broker.node.broker_client import BrokerClient, BrokerError


def _require(condition: bool, what: str) -> None:
    """A property of the parser; not ``assert``, which ``python -O`` would drop."""
    if not condition:
        raise AssertionError(what)


# -- 1. the envelope model ----------------------------------------------------------------------


def envelope(data: bytes) -> bool:
    """`Envelope.model_validate_json`; refusal: pydantic's ValidationError.

    An envelope the model accepts must serialise as the node signs it (compose.py: JSON
    mode without nulls, RFC 8785), read back as the broker reads it (canonical JSON, then
    the model), and serialise again to the same bytes: one envelope, one signed byte string.
    """
    try:
        parsed = Envelope.model_validate_json(data)
    except ValidationError:
        return False
    signed = canonical_json(parsed.model_dump(mode="json", exclude_none=True))
    again = Envelope.model_validate(parse_canonical_json(signed))
    resigned = canonical_json(again.model_dump(mode="json", exclude_none=True))
    _require(resigned == signed, "the envelope's canonical JSON does not round-trip")
    _require(Envelope.model_validate_json(signed) == again, "JSON and Python reads differ")
    return True


# -- 2. JWS ---------------------------------------------------------------------------------------

_TYPS = (jws.TYP_ENVELOPE, jws.TYP_RECEIPT, jws.TYP_ACK)
_SEED_PUBLIC = seeds.SEED_KEY.private.public_key()
_STRANGER_PUBLIC = seeds.STRANGER_KEY.private.public_key()


def jws_object(data: bytes) -> bool:
    """`jws.parse` of the JSON input for each ``typ``, then `jws.verify`; refusal:
    VerificationError (MalformedError is one). Input that is not JSON never reaches them.

    Nothing may verify under a key that signed nothing; what verifies under the seeds' key
    must be exactly what `jws.sign` makes of its claims (no second spelling of a signed
    object, so the digests that receipts name are unambiguous).
    """
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return False
    accepted = False
    for typ in _TYPS:
        try:
            parsed = jws.parse(obj, typ)
        except VerificationError:
            continue
        accepted = True
        jws.digest(obj)  # the broker digests every object it parsed
        try:
            jws.verify(parsed, _STRANGER_PUBLIC)
        except VerificationError:
            pass
        else:
            raise AssertionError("a JWS verified under a key that signed nothing")
        try:
            claims: dict[str, Any] | None = parsed.claims()
        except VerificationError:
            claims = None
        try:
            jws.verify(parsed, _SEED_PUBLIC)
        except VerificationError:
            continue
        _require(claims is not None, "a signed payload is not canonical JSON")
        _require(jws.sign(claims or {}, seeds.SEED_KEY, typ) == obj, "a second spelling verified")
    return accepted


# -- 3. signed notes and checkpoints --------------------------------------------------------------

_NOTE_VERIFIERS = seeds.note_verifiers()
_NOTE_NAMES = {verifier.name for verifier in _NOTE_VERIFIERS}
_CHECKPOINT_VERIFIER = seeds.NOTE_SIGNER.verifier()
_SIGNED_TEXTS = seeds.signed_note_texts()


def note(data: bytes) -> bool:
    """`open_note` (with the checkpoint key and the Go example's) and `open_checkpoint`
    (with the checkpoint key, for its origin) of the input as text; refusal: NoteError or
    VerificationError. Invalid UTF-8 arrives as lone surrogates (``surrogateescape``), as a
    ``str`` from elsewhere might hold them: refused, never a crash.

    Only texts the known keys signed may open, and a checkpoint that opens writes back as
    the very text that was signed.
    """
    text = data.decode("utf-8", "surrogateescape")
    try:
        body, names = open_note(text, _NOTE_VERIFIERS)
    except VerificationError:
        return False
    _require(body in _SIGNED_TEXTS, "a note text no known key signed verified")
    _require(bool(names) and set(names) <= _NOTE_NAMES, "unknown signers were named")
    _require(text.startswith(body), "the text is not the start of the note")
    try:
        checkpoint = open_checkpoint(text, _CHECKPOINT_VERIFIER, origin=seeds.ORIGIN)
    except VerificationError:
        return True
    _require(_CHECKPOINT_VERIFIER.name in names, "a checkpoint opened without its key")
    _require(checkpoint.body() == body, "a checkpoint does not write back as its text")
    _require(Checkpoint.parse(body) == checkpoint, "a checkpoint does not parse back")
    return True


# -- 4. the node's client of the broker: problems, receipts, inbox pages --------------------------


class _Broker:
    """The broker as the problem target plays it: `GET /v1/broker` names the broker key;
    every other call gets the fuzzed status and body."""

    def __init__(self) -> None:
        self.status, self.body = 200, b""
        self.document = json.dumps(seeds.broker_document()).encode()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/broker":
            return httpx.Response(200, content=self.document)
        kind = "application/problem+json" if self.status >= 400 else "application/json"
        return httpx.Response(self.status, content=self.body, headers={"content-type": kind})


_BROKER = _Broker()


def _submit_answer(mode: int, body: bytes) -> bytes:
    """The submit call's answer: the body as it is, or a receipt signed over its JSON."""
    if mode == seeds.MODE_RAW:
        return body
    try:
        claims = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if mode != seeds.MODE_SIGNED and isinstance(claims, dict):
        claims["envelope_digest"] = jws.digest(seeds.submitted_envelope())
    key = seeds.STRANGER_KEY if mode == seeds.MODE_STRANGER else seeds.BROKER_KEY
    typ = jws.TYP_ACK if mode == seeds.MODE_ACK else jws.TYP_RECEIPT
    try:
        receipt = jws.sign(claims, key, typ)
    except MalformedError:  # not canonicalisable (NaN, integers beyond I-JSON): as it is
        return body
    return json.dumps({"receipt": receipt}).encode()


async def _client_call(op: int, mode: int) -> bool:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(_BROKER.handle), trust_env=False
    ) as http:
        client = BrokerClient("http://broker", http=http)
        try:
            if op == seeds.OP_CALL:
                response = await client._call("GET", f"/v1/messages/{seeds.MESSAGE_ID}")
                _require(response.status_code < 400, "an error status was not refused")
            elif op == seeds.OP_SUBMIT:
                envelope = seeds.submitted_envelope()
                receipt = await client.submit(envelope, seeds.SEED_KEY)
                _require(mode not in (seeds.MODE_STRANGER, seeds.MODE_ACK), "a forged receipt")
                _require(receipt.envelope_digest == jws.digest(envelope), "another digest")
            else:
                page = await client.fetch_inbox(seeds.SEED_KEY, after=None, wait=0)
                _require(all(isinstance(i.cursor, int) for i in page.items), "a cursor")
        except BrokerError as exc:
            _require(isinstance(exc.problem, dict), "the problem is not an object")
            _require(op != seeds.OP_CALL or exc.status == _BROKER.status, "another status")
            str(exc)  # what the node relays and logs
            return False
    return True


def problem(data: bytes) -> bool:
    """`BrokerClient` over `httpx.MockTransport`: the real calls read a fuzzed answer.
    Refusal: BrokerError.

    Input: byte 0 picks the call (`_call` alone, `submit`, `fetch_inbox`); bytes 1-2 the
    status (100-599); byte 3 how a submit's answer is built (see ``seeds.MODE_*``); the
    rest is the body. An error status is always a BrokerError carrying that status; a
    receipt is taken only when the broker's key signed it over the submitted envelope.
    """
    head = data[:4].ljust(4, b"\0")
    op, mode = head[0] % 3, head[3] % 5
    _BROKER.status = 100 + int.from_bytes(head[1:3], "big") % 500
    body = data[4:]
    _BROKER.body = _submit_answer(mode, body) if op == seeds.OP_SUBMIT else body
    return asyncio.run(_client_call(op, mode))


# -- the registry the runner and the tests use ----------------------------------------------------


#: Tokens libFuzzer splices into inputs (its -dict=): JSON a mutation rarely spells out.
JSON_TOKENS = (
    b"Infinity",
    b"-Infinity",
    b"NaN",
    b"1e400",
    b"-0.0",
    b"9007199254740993",
    b"null",
    b"true",
    b"false",
    b'"\\ud800"',
    b'"\\u0000"',
    b"[" * 64,
    b"{}",
    b"[]",
)
NOTE_TOKENS = ("\u2014 ".encode(), b"\n\n", b"+", b"\xed\xa0\x80", b"\xff", b"\r", b"\t", b"=")


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], bool]
    seeds: Callable[[], list[Seed]]
    summary: str
    tokens: tuple[bytes, ...] = JSON_TOKENS


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "envelope",
            envelope,
            seeds.envelope_seeds,
            "Envelope.model_validate_json, and its canonical JSON round trip",
        ),
        Target("jws", jws_object, seeds.jws_seeds, "jws.parse and jws.verify of a JSON object"),
        Target(
            "note",
            note,
            seeds.note_seeds,
            "open_note and open_checkpoint of text (C2SP signed note, tlog checkpoint)",
            NOTE_TOKENS,
        ),
        Target(
            "problem",
            problem,
            seeds.problem_seeds,
            "BrokerClient reading broker answers: problems, receipts, inbox pages",
        ),
    )
}
