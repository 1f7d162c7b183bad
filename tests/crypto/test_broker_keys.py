"""The broker's key document: created private on first start (once, even when several
processes start at once), read from a file or the environment, and rotated keeping the
public half of the retired key."""

from __future__ import annotations

import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trm_broker.crypto import broker_keys
from trm_broker.crypto.errors import MalformedError


def test_broker_key_file_is_created_private_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "state" / "broker-key.json"
    keys = broker_keys.load(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text(encoding="utf-8"))["signing"]["kid"] == keys.signing.kid
    again = broker_keys.load(path)
    assert again.signing.seed_b64() == keys.signing.seed_b64()
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_broker_key_file_created_by_eight_threads_at_once_is_one_key(tmp_path: Path) -> None:
    for attempt in range(10):
        path = tmp_path / str(attempt) / "broker-key.json"
        start = threading.Barrier(8)

        def create(path: Path = path, start: threading.Barrier = start) -> str:
            start.wait()
            return broker_keys.load(path, create=True).signing.kid

        with ThreadPoolExecutor(max_workers=8) as pool:
            kids = list(pool.map(lambda _: create(), range(8)))
        assert len(set(kids)) == 1
        assert broker_keys.load(path).signing.kid == kids[0]
        assert os.listdir(path.parent) == [path.name]


def test_a_missing_key_file_is_not_created_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="TRM_BROKER_KEY_FILE"):
        broker_keys.load(tmp_path / "none.json")
    assert not (tmp_path / "none.json").exists()


def test_a_broken_broker_key_document_is_refused_as_malformed(tmp_path: Path) -> None:
    path = tmp_path / "broker-key.json"
    path.write_text("", encoding="utf-8")
    with pytest.raises(MalformedError):
        broker_keys.load(path)
    with pytest.raises(MalformedError, match="TRM_BROKER_KEY"):
        broker_keys.load(path, '{"signing": {}}')


def test_the_environment_document_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broker-key.json"
    on_disk = broker_keys.load(path, create=True)
    other = broker_keys.load(tmp_path / "other.json", create=True)
    document = json.dumps(other.to_json())
    assert broker_keys.load(path, document).signing.kid == other.signing.kid != on_disk.signing.kid


def test_rotation_keeps_the_public_half_of_every_retired_key_and_no_private_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broker-key.json"
    first = broker_keys.load(path, create=True)
    when = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    before, after = broker_keys.rotate(path, when)
    assert before.signing.kid == first.signing.kid != after.signing.kid
    _, third = broker_keys.rotate(path, when.replace(hour=13))
    loaded = broker_keys.load(path)
    assert loaded.signing.kid == third.signing.kid
    assert [(k.kid, k.public_b64, k.retired_at) for k in loaded.retired] == [
        (first.signing.kid, first.signing.public_b64, when),
        (after.signing.kid, after.signing.public_b64, when.replace(hour=13)),
    ]
    text = path.read_text(encoding="utf-8")
    assert first.signing.seed_b64() not in text
    assert after.signing.seed_b64() not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == [path.name]
