"""Key ids are RFC 7638 thumbprints; key files round-trip, stay private and never clobber."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import (
    EncryptionKey,
    KeySet,
    SigningKey,
    key_id,
    load_ed25519_public,
    load_x25519_public,
)

# RFC 8037 Appendix A: the Ed25519 key pair and (A.3) its RFC 7638 thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def independent_thumbprint(crv: str, x: str) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, without whitespace."""
    jwk = json.dumps({"crv": crv, "kty": "OKP", "x": x}, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(jwk.encode("ascii")).digest())


def test_independent_thumbprint_matches_rfc_8037_a3() -> None:
    assert independent_thumbprint("Ed25519", RFC8037_X) == RFC8037_THUMBPRINT


def test_key_id_is_the_rfc_8037_a3_thumbprint() -> None:
    assert key_id("Ed25519", raw(RFC8037_X)) == RFC8037_THUMBPRINT


def test_signing_key_from_rfc_seed_has_rfc_public_key_and_kid() -> None:
    key = SigningKey.from_seed(RFC8037_D)
    assert key.public_b64 == RFC8037_X
    assert key.kid == RFC8037_THUMBPRINT
    assert key.seed_b64() == RFC8037_D


def test_generated_key_ids_match_an_independent_thumbprint() -> None:
    keyset = KeySet.generate("ng.naptip")
    assert keyset.signing.kid == independent_thumbprint("Ed25519", keyset.signing.public_b64)
    assert keyset.encryption.kid == independent_thumbprint("X25519", keyset.encryption.public_b64)
    assert keyset.signing.kid != keyset.encryption.kid


def test_public_half_holds_no_private_material() -> None:
    keyset = KeySet.generate("ng.naptip")
    public = keyset.public()
    text = json.dumps(public)
    assert keyset.signing.seed_b64() not in text
    assert keyset.encryption.secret_b64() not in text
    assert public["signing"] == {
        "kid": keyset.signing.kid,
        "alg": "Ed25519",
        "public": keyset.signing.public_b64,
    }
    assert public["encryption"]["alg"] == "X25519"


def test_key_set_write_read_round_trip(tmp_path: Path) -> None:
    keyset = KeySet.generate("ng.naptip")
    path = tmp_path / "keys" / "ng.naptip.json"
    keyset.write(path)
    loaded = KeySet.read(path)
    assert loaded.participant == "ng.naptip"
    assert loaded.public() == keyset.public()
    assert loaded.signing.seed_b64() == keyset.signing.seed_b64()
    assert loaded.encryption.secret_b64() == keyset.encryption.secret_b64()


def test_written_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    KeySet.generate("ng.naptip").write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    first = KeySet.generate("ng.naptip")
    first.write(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        KeySet.generate("ng.naptip").write(path)
    assert path.read_bytes() == before
    assert KeySet.read(path).public() == first.public()


def written(tmp_path: Path, mutate: Any) -> Path:
    path = tmp_path / "k.json"
    document = KeySet.generate("ng.naptip").to_json()
    mutate(document)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_key_file_whose_signing_kid_does_not_match_is_refused(tmp_path: Path) -> None:
    other = SigningKey.generate().kid
    path = written(tmp_path, lambda doc: doc["signing"].update(kid=other))
    with pytest.raises(MalformedError):
        KeySet.read(path)


def test_key_file_whose_encryption_kid_does_not_match_is_refused(tmp_path: Path) -> None:
    other = EncryptionKey.generate().kid
    path = written(tmp_path, lambda doc: doc["encryption"].update(kid=other))
    with pytest.raises(MalformedError):
        KeySet.read(path)


def test_key_file_with_swapped_private_key_is_refused(tmp_path: Path) -> None:
    seed = SigningKey.generate().seed_b64()
    path = written(tmp_path, lambda doc: doc["signing"].update(private=seed))
    with pytest.raises(MalformedError):
        KeySet.read(path)


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"participant": "x", "signing": "nope", "encryption": {}},
        {"participant": "x", "signing": {"private": "AAAA"}, "encryption": {"private": "AAAA"}},
        {"participant": "x", "signing": {"private": 7}, "encryption": {"private": 7}},
    ],
)
def test_malformed_key_documents_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        KeySet.from_json(document)


def test_public_key_loaders_refuse_wrong_lengths() -> None:
    key = Ed25519PrivateKey.generate()
    assert load_ed25519_public(SigningKey(key).public_b64) is not None
    for text in ["", b64url(bytes(31)), b64url(bytes(33))]:
        with pytest.raises(MalformedError):
            load_ed25519_public(text)
        with pytest.raises(MalformedError):
            load_x25519_public(text)
