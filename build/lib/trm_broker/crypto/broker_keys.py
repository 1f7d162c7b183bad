"""The broker's own keys: the current Ed25519 key (receipts, pushes, checkpoints), the
public halves of the keys it retired, so what they signed stays verifiable, and the next key,
once one is prepared.

The key document is a JSON file (``TRM_BROKER_KEY_FILE``, mode 0600, created on first
start) or the same JSON in ``TRM_BROKER_KEY``. Rotation (:func:`rotate`) makes the prepared
next key current (or a new one, if none was prepared) and moves the old one's public half,
with the time it was retired, to ``retired``; its private half is gone. A next key is
prepared (:func:`prepare`) ahead of a rotation, so that the nodes pinning the broker's keys
can pin it before it signs anything (docs/operations.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trm_broker.crypto.errors import MalformedError
from trm_broker.crypto.keys import SigningKey
from trm_broker.domain.times import rfc3339


@dataclass(frozen=True)
class RetiredKey:
    kid: str
    public_b64: str
    retired_at: datetime

    def to_json(self) -> dict[str, str]:
        at = rfc3339(self.retired_at, timespec="auto")
        return {"kid": self.kid, "alg": "Ed25519", "public": self.public_b64, "retired_at": at}


def _private(key: SigningKey) -> dict[str, str]:
    return {
        "kid": key.kid,
        "alg": "Ed25519",
        "public": key.public_b64,
        "private": key.seed_b64(),
    }


@dataclass(frozen=True)
class BrokerKeys:
    signing: SigningKey
    retired: tuple[RetiredKey, ...] = ()
    #: Prepared for the next rotation: published, but signing nothing yet.
    next: SigningKey | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "signing": _private(self.signing),
            "retired": [key.to_json() for key in self.retired],
        }
        if self.next is not None:
            document["next"] = _private(self.next)
        return document

    @classmethod
    def from_json(cls, data: Any, where: str) -> BrokerKeys:
        try:
            signing = SigningKey.from_seed(data["signing"]["private"])
            prepared = data.get("next")
            following = SigningKey.from_seed(prepared["private"]) if prepared else None
            retired = tuple(
                RetiredKey(
                    kid=str(item["kid"]),
                    public_b64=str(item["public"]),
                    retired_at=datetime.fromisoformat(str(item["retired_at"])),
                )
                for item in data.get("retired", [])
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedError(f"{where} is not a broker key document") from exc
        return cls(signing, retired, following)


def read(path: Path) -> BrokerKeys:
    with path.open(encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except ValueError as exc:
            raise MalformedError(f"{path} is not a broker key document") from exc
    return BrokerKeys.from_json(data, str(path))


def load(path: Path, document: str | None = None, *, create: bool = False) -> BrokerKeys:
    """The broker's keys from ``document`` (the JSON, e.g. from the environment) if given,
    else from ``path``; a missing file is created only if ``create``."""
    if document is not None:
        try:
            data = json.loads(document)
        except ValueError as exc:
            raise MalformedError("TRM_BROKER_KEY is not a broker key document") from exc
        return BrokerKeys.from_json(data, "TRM_BROKER_KEY")
    if path.exists():
        return read(path)
    if not create:
        raise FileNotFoundError(
            f"{path} does not exist: point TRM_BROKER_KEY_FILE at the broker's key file"
        )
    keys = BrokerKeys(SigningKey.generate())
    try:
        _write(path, keys, exclusive=True)
    except FileExistsError:
        return read(path)  # another process starting at the same moment wrote it first
    return keys


def rotate(path: Path, now: datetime) -> tuple[BrokerKeys, BrokerKeys]:
    """Replace the current key by the prepared next one, or by a new one if none was
    prepared; return (before, after). The file is replaced atomically; restart every broker
    and worker that reads it."""
    before = read(path)
    retired = RetiredKey(before.signing.kid, before.signing.public_b64, now)
    after = BrokerKeys(before.next or SigningKey.generate(), (*before.retired, retired))
    _write(path, after, exclusive=False)
    return before, after


def prepare(path: Path) -> BrokerKeys:
    """Add a next key to the document, unless one is prepared already; return the document.
    The current key goes on signing: the next one signs from the next :func:`rotate`."""
    keys = read(path)
    if keys.next is None:
        keys = BrokerKeys(keys.signing, keys.retired, SigningKey.generate())
        _write(path, keys, exclusive=False)
    return keys


def _write(path: Path, keys: BrokerKeys, *, exclusive: bool) -> None:
    """Write in full under a temporary name (mode 0600), then put it in place: a reader never
    sees half a file. ``exclusive``: fail if the file exists (first start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(keys.to_json(), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(temporary, path)
        else:
            os.replace(temporary, path)
            temporary = ""
    finally:
        if temporary:
            os.unlink(temporary)
