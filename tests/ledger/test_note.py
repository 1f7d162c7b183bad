"""C2SP signed notes and tlog checkpoints: the Go implementation's published example, an
independent verifier written from the spec, refusals, and round trips."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from trm_broker.crypto.errors import VerificationError
from trm_broker.crypto.keys import SigningKey
from trm_broker.ledger.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    key_hash,
    open_checkpoint,
    open_note,
    sign_checkpoint,
)

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "signed-note"
DASH = "\u2014"
ROOT = hashlib.sha256(b"root").digest()


def _example() -> dict[str, Any]:
    # A missing vector is a failure, not a skip: it is the interoperability evidence.
    data: dict[str, Any] = json.loads((TESTDATA / "go-example.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    return _example()


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner("example.org/trm-ledger", SigningKey.generate())


def _replace_signature_line(note: str, line: str) -> str:
    text, _, _ = note.rpartition("\n\n")
    return f"{text}\n\n{line}\n"


def _spec_verify(note: str, name: str, public_raw: bytes) -> str:
    """An independent reading of c2sp.org/signed-note: the text, if ``name``'s key signed it."""
    assert note.endswith("\n")
    split = note.rindex("\n\n")
    text, block = note[: split + 1], note[split + 2 :]
    expected_id = hashlib.sha256(name.encode() + b"\n\x01" + public_raw).digest()[:4]
    verified = False
    for line in block.splitlines():
        dash, key_name, encoded = line.split(" ")
        assert dash == DASH
        raw = base64.b64decode(encoded, validate=True)
        if key_name == name and raw[:4] == expected_id:
            Ed25519PublicKey.from_public_bytes(public_raw).verify(raw[4:], text.encode())
            verified = True
    assert verified, "no signature by the expected key"
    return text


# -- The Go implementation's published example (golang.org/x/mod/sumdb/note) --


def test_example_vector_is_present() -> None:
    assert set(_example()) >= {"verifier_key", "signer_key", "text", "note"}


def test_example_note_verifies(example: dict[str, Any]) -> None:
    verifier = NoteVerifier.from_vkey(example["verifier_key"])
    text, names = open_note(example["note"], [verifier])
    assert text == example["text"]
    assert names == ["PeterNeumann"]


def test_example_verifier_key_round_trips(example: dict[str, Any]) -> None:
    verifier = NoteVerifier.from_vkey(example["verifier_key"])
    assert verifier.name == "PeterNeumann"
    assert verifier.key_hash == bytes.fromhex("c74f20a3")
    assert verifier.vkey() == example["verifier_key"]
    raw = verifier.public_key.public_bytes_raw()
    assert key_hash("PeterNeumann", raw) == verifier.key_hash


def test_example_signature_reproduced_byte_for_byte(example: dict[str, Any]) -> None:
    signer = NoteSigner.from_skey(example["signer_key"])
    assert signer.verifier().vkey() == example["verifier_key"]
    assert signer.sign(example["text"]) == example["note"]


def test_example_refused_after_any_change_to_the_text(example: dict[str, Any]) -> None:
    verifier = NoteVerifier.from_vkey(example["verifier_key"])
    note: str = example["note"]
    for i, ch in enumerate(example["text"][:-1]):
        changed = note[:i] + ("X" if ch != "X" else "Y") + note[i + 1 :]
        with pytest.raises(NoteError):
            open_note(changed, [verifier])


# -- What we sign, checked as another implementation would --


def test_our_checkpoint_passes_an_independent_verifier(signer: NoteSigner) -> None:
    checkpoint = Checkpoint("example.org/trm-ledger", 20852163, ROOT)
    note = sign_checkpoint(checkpoint, signer)
    raw = signer.key.private.public_key().public_bytes_raw()
    text = _spec_verify(note, signer.name, raw)
    assert text == f"example.org/trm-ledger\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert open_checkpoint(note, signer.verifier(), "example.org/trm-ledger") == checkpoint


def test_unknown_cosignatures_are_ignored(signer: NoteSigner, example: dict[str, Any]) -> None:
    checkpoint = Checkpoint("example.org/trm-ledger", 3, ROOT)
    witness = NoteSigner("witness.example", SigningKey.generate())
    witness_line = witness.sign(checkpoint.body()).rpartition("\n\n")[2]
    cosigned = sign_checkpoint(checkpoint, signer) + witness_line
    assert open_note(cosigned, [signer.verifier()])[1] == ["example.org/trm-ledger"]
    both = [signer.verifier(), witness.verifier()]
    assert open_note(cosigned, both)[1] == ["example.org/trm-ledger", "witness.example"]
    go = NoteVerifier.from_vkey(example["verifier_key"])
    assert open_note(cosigned, [go, signer.verifier()])[1] == ["example.org/trm-ledger"]


def test_checkpoint_extensions_are_kept(signer: NoteSigner) -> None:
    checkpoint = Checkpoint("log.example", 0, ROOT, ("Timestamp: 1700000000",))
    assert checkpoint.body().endswith("\nTimestamp: 1700000000\n")
    assert open_checkpoint(sign_checkpoint(checkpoint, signer), signer.verifier()) == checkpoint


# -- Refusals --


def test_note_error_is_a_verification_error() -> None:
    assert issubclass(NoteError, VerificationError)


def _note(signer: NoteSigner) -> str:
    return signer.sign("hello\nworld\n")


def test_refuses_text_without_final_newline(signer: NoteSigner) -> None:
    with pytest.raises(NoteError):
        signer.sign("no newline")
    with pytest.raises(NoteError):
        open_note(_note(signer)[:-1], [signer.verifier()])
    # The block must end in a newline, not merely be cut one character short of a valid one.
    with pytest.raises(NoteError):
        open_note(f"{_note(signer)}{DASH} other.example AAAAAAA=X", [signer.verifier()])


def test_refuses_control_characters(signer: NoteSigner) -> None:
    with pytest.raises(NoteError):
        signer.sign("tab\there\n")
    with pytest.raises(NoteError):
        open_note(_note(signer).replace("hello", "hel\rlo"), [signer.verifier()])


def test_refuses_altered_text(signer: NoteSigner) -> None:
    with pytest.raises(NoteError, match="does not verify"):
        open_note(_note(signer).replace("world", "worle"), [signer.verifier()])


def test_refuses_altered_signature(signer: NoteSigner) -> None:
    note = _note(signer)
    line = note[:-1].rpartition("\n\n")[2]
    _, name, encoded = line.split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[10] ^= 1
    altered = _replace_signature_line(note, f"{DASH} {name} {base64.b64encode(raw).decode()}")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(altered, [signer.verifier()])


def test_refuses_signature_by_another_key_with_the_same_name(signer: NoteSigner) -> None:
    impostor = NoteSigner(signer.name, SigningKey.generate())
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_note(_note(impostor), [signer.verifier()])


def test_refuses_wrong_key_hash(signer: NoteSigner) -> None:
    # The right signature under another key ID is a signature by an unknown key.
    note = _note(signer)
    line = note[:-1].rpartition("\n\n")[2]
    _, name, encoded = line.split(" ")
    raw = base64.b64decode(encoded)
    wrong = bytes([raw[0] ^ 1]) + raw[1:]
    altered = _replace_signature_line(note, f"{DASH} {name} {base64.b64encode(wrong).decode()}")
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_note(altered, [signer.verifier()])


def test_refuses_known_key_id_under_another_name(signer: NoteSigner) -> None:
    line = _note(signer)[:-1].rpartition("\n\n")[2].replace(signer.name, "other.example")
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_note(_replace_signature_line(_note(signer), line), [signer.verifier()])


@pytest.mark.parametrize(
    "block",
    [
        "",  # blank line, then nothing
        "- name AAAAAAA=",  # hyphen, not em dash
        f"{DASH}name AAAAAAA=",  # no space after the dash
        f"{DASH} name",  # no signature
        f"{DASH} name AAAA",  # shorter than key ID and one byte
        f"{DASH} name not*base64",
        f"{DASH} name AAAAAAA",  # unpadded
        f"{DASH} name AAAAAAB=",  # non-canonical trailing bits
        f"{DASH} na+me AAAAAAA=",
        f"{DASH} name AAAAAAA= extra",
    ],
)
def test_refuses_malformed_signature_lines(signer: NoteSigner, block: str) -> None:
    good = _note(signer).rpartition("\n\n")[2]
    with pytest.raises(NoteError):
        open_note(f"hello\nworld\n\n{good}{block}\n", [signer.verifier()])


def test_refuses_note_without_signature_line(signer: NoteSigner) -> None:
    for note in ("hello\nworld\n", "hello\nworld\n\n", ""):
        with pytest.raises(NoteError):
            open_note(note, [signer.verifier()])


def test_refuses_unknown_verifier_only(signer: NoteSigner) -> None:
    other = NoteSigner("other.example", SigningKey.generate())
    with pytest.raises(NoteError, match="not signed by any known key"):
        open_note(_note(signer), [other.verifier()])
    with pytest.raises(NoteError):
        open_note(_note(signer), [])


def test_refuses_too_many_signatures(signer: NoteSigner) -> None:
    line = _note(signer).rpartition("\n\n")[2]
    with pytest.raises(NoteError, match="more than 100"):
        open_note("hello\nworld\n\n" + line * 101, [signer.verifier()])
    assert open_note("hello\nworld\n\n" + line * 100, [signer.verifier()])[1] == [signer.name]


def test_the_same_verifier_twice_is_not_ambiguous(signer: NoteSigner) -> None:
    verifier = signer.verifier()
    assert open_note(_note(signer), [verifier, verifier])[1] == [signer.name]


def test_refuses_ambiguous_verifiers(signer: NoteSigner) -> None:
    # Two keys under one name and key ID need a 32-bit collision, which an attacker who
    # writes the trust list can compute; bypass the constructor's check to stand for it.
    other = object.__new__(NoteVerifier)
    public_key = SigningKey.generate().private.public_key()
    for field, value in (("name", signer.name), ("key_hash", signer.verifier().key_hash)):
        object.__setattr__(other, field, value)
    object.__setattr__(other, "public_key", public_key)
    with pytest.raises(NoteError, match="share the name"):
        open_note(_note(signer), [signer.verifier(), other])


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong hash
        "Peter+Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # '+' in name
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # empty name
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex digits
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not 0x01
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T_",  # not base64
        "PeterNeumann+c74f20a3",
        "PeterNeumann",
    ],
)
def test_refuses_bad_verifier_keys(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(vkey)


def test_refuses_small_order_verifier_key() -> None:
    identity = bytes([1]) + bytes(31)  # y = 1: the neutral point, which "verifies" forgeries
    encoded = base64.b64encode(bytes([1]) + identity).decode()
    vkey = f"log.example+{key_hash('log.example', identity).hex()}+{encoded}"
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(vkey)


def test_refuses_bad_signer_keys(example: dict[str, Any]) -> None:
    skey: str = example["signer_key"]
    for bad in (
        skey.replace("c74f20a3", "c74f20a4"),
        skey.replace("PRIVATE+KEY+", "PRIVATE+KEY+X"),
        skey.replace("PRIVATE", "PUBLIC"),
        example["verifier_key"],
    ):
        with pytest.raises(NoteError):
            NoteSigner.from_skey(bad)
    with pytest.raises(NoteError):
        NoteSigner("a+b", SigningKey.generate())


def test_signer_with_wrong_hash_in_verifier_is_refused(signer: NoteSigner) -> None:
    public_key = signer.key.private.public_key()
    with pytest.raises(NoteError):
        NoteVerifier(signer.name, b"\x00\x00\x00\x00", public_key)


_B64_ROOT = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"log\n01\n{_B64_ROOT}\n",  # leading zero
        f"log\n00\n{_B64_ROOT}\n",
        f"log\n-1\n{_B64_ROOT}\n",
        f"log\n+1\n{_B64_ROOT}\n",
        f"log\n 1\n{_B64_ROOT}\n",
        f"log\none\n{_B64_ROOT}\n",
        f"log\n1_000\n{_B64_ROOT}\n",
        f"log\n\u0661\n{_B64_ROOT}\n",  # ARABIC-INDIC DIGIT ONE: int() would take it
        f"log\n{2**64}\n{_B64_ROOT}\n",
        f"log\n\n{_B64_ROOT}\n",
        f"log\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31-byte root
        f"log\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",
        f"log\n1\n{_B64_ROOT.rstrip('=')}\n",  # unpadded
        f"log\n1\n{_B64_ROOT[:-2]}B=\n",  # non-canonical trailing bits
        f"\n1\n{_B64_ROOT}\n",  # empty origin
        f"log\n1\n{_B64_ROOT}",  # no final newline
        f"log\n1\n{_B64_ROOT}\n\n",  # empty extension line
        "log\n1\n",  # missing root
        "log\n",
        "",
    ],
)
def test_refuses_malformed_checkpoints(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_largest_tree_size_parses() -> None:
    assert Checkpoint.parse(f"log\n{2**64 - 1}\n{_B64_ROOT}\n").size == 2**64 - 1


def test_refuses_invalid_checkpoint_values() -> None:
    for origin, size, root, extensions in (
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        ("log", -1, ROOT, ()),
        ("log", 2**64, ROOT, ()),
        ("log", 1, ROOT[:16], ()),
        ("log", 1, ROOT, ("",)),
        ("log", 1, ROOT, ("x\ny",)),
    ):
        with pytest.raises(NoteError):
            Checkpoint(origin, size, root, extensions)


def test_refuses_checkpoint_for_another_origin(signer: NoteSigner) -> None:
    note = sign_checkpoint(Checkpoint("log.example", 5, ROOT), signer)
    with pytest.raises(NoteError, match=r"not 'other\.example'"):
        open_checkpoint(note, signer.verifier(), "other.example")


def test_refuses_checkpoint_signed_by_another_key(signer: NoteSigner) -> None:
    other = NoteSigner(signer.name, SigningKey.generate())
    note = sign_checkpoint(Checkpoint("log.example", 5, ROOT), other)
    with pytest.raises(NoteError):
        open_checkpoint(note, signer.verifier())


def test_refuses_signed_note_that_is_not_a_checkpoint(signer: NoteSigner) -> None:
    with pytest.raises(NoteError):
        open_checkpoint(_note(signer), signer.verifier())


def test_independent_verifier_rejects_a_tampered_checkpoint(signer: NoteSigner) -> None:
    note = sign_checkpoint(Checkpoint("log.example", 5, ROOT), signer)
    raw = signer.key.private.public_key().public_bytes_raw()
    with pytest.raises(InvalidSignature):
        _spec_verify(note.replace("\n5\n", "\n6\n"), signer.name, raw)


# -- Round trips --

names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="+"),
    min_size=1,
    max_size=40,
).filter(lambda name: not any(ch.isspace() for ch in name))
extension_lines = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)


@given(
    origin=names,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(extension_lines, max_size=3).map(tuple),
)
def test_checkpoint_body_round_trips(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin, size, root, extensions)
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    assert Checkpoint.parse(checkpoint.body()).body() == checkpoint.body()


_KEY = SigningKey.generate()


@given(
    origin=names,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_sign_open_round_trips(origin: str, size: int, root: bytes) -> None:
    signer = NoteSigner(origin, _KEY)
    checkpoint = Checkpoint(origin, size, root)
    note = sign_checkpoint(checkpoint, signer)
    assert open_checkpoint(note, signer.verifier(), origin) == checkpoint
    assert NoteVerifier.from_vkey(signer.verifier().vkey()) == signer.verifier()
    _spec_verify(note, origin, _KEY.private.public_key().public_bytes_raw())
