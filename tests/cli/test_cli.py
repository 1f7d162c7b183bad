"""`trm-broker keys new`: a private key file for the node, the public half to register."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trm_broker.cli import app
from trm_broker.crypto.keys import KeySet


def test_keys_new_writes_a_private_file_and_prints_the_public_half(tmp_path: Path) -> None:
    out = tmp_path / "ng.keys.json"
    result = CliRunner().invoke(app, ["keys", "new", "ng.naptip", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    keyset = KeySet.read(out)
    printed = json.loads(result.stdout)
    assert printed == {"participant": "ng.naptip", "keys": keyset.public()}
    assert "private" not in result.stdout


def test_keys_new_never_overwrites_a_key_file(tmp_path: Path) -> None:
    out = tmp_path / "ng.keys.json"
    out.write_text("precious")
    result = CliRunner().invoke(app, ["keys", "new", "ng.naptip", "--out", str(out)])
    assert result.exit_code == 1
    assert out.read_text() == "precious"


def test_keys_new_makes_an_x25519_encryption_key_by_default(tmp_path: Path) -> None:
    out = tmp_path / "ng.keys.json"
    result = CliRunner().invoke(app, ["keys", "new", "ng.naptip", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["keys"]["encryption"]["alg"] == "X25519"


def test_keys_new_makes_a_post_quantum_hybrid_encryption_key_on_request(tmp_path: Path) -> None:
    out = tmp_path / "ng.keys.json"
    arguments = ["keys", "new", "ng.naptip", "--out", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--encryption-alg", "MLKEM768-X25519"])
    assert result.exit_code == 0, result.output
    keyset = KeySet.read(out)
    assert keyset.encryption.alg == "MLKEM768-X25519"
    assert json.loads(result.stdout) == {"participant": "ng.naptip", "keys": keyset.public()}
    assert "private" not in result.stdout


def test_keys_new_refuses_an_unknown_encryption_alg(tmp_path: Path) -> None:
    out = tmp_path / "ng.keys.json"
    arguments = ["keys", "new", "ng.naptip", "--out", str(out), "--encryption-alg", "X448"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert not out.exists()


def test_serve_refuses_a_public_address_without_its_public_url() -> None:
    # Signed requests name the URL they were sent to; off loopback it must be configured.
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])  # noqa: S104
    assert result.exit_code == 2
    assert "TRM_PUBLIC_URL" in result.output


def test_a_worker_refuses_sqlite_where_the_dispatcher_runs_inside_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trm_broker.settings import get_settings

    monkeypatch.setenv("TRM_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["worker"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "needs PostgreSQL" in result.output


def test_a_worker_refuses_to_start_without_the_brokers_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trm_broker.settings import get_settings

    monkeypatch.setenv("TRM_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:9/none")
    monkeypatch.setenv("TRM_BROKER_KEY_FILE", str(tmp_path / "missing.json"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["worker"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "TRM_BROKER_KEY_FILE" in result.output
    assert not (tmp_path / "missing.json").exists()  # never a new key of its own


def test_the_brokers_key_is_created_once_then_rotated_keeping_the_old_public_half(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broker-key.json"
    created = CliRunner().invoke(app, ["keys", "new-broker", "--key-file", str(path)])
    assert created.exit_code == 0, created.output
    first = json.loads(path.read_text(encoding="utf-8"))["signing"]
    assert first["kid"] in created.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CliRunner().invoke(app, ["keys", "new-broker", "--key-file", str(path)])
    assert again.exit_code == 2  # never overwritten
    rotated = CliRunner().invoke(app, ["keys", "rotate-broker", "--key-file", str(path)])
    assert rotated.exit_code == 0, rotated.output
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["signing"]["kid"] != first["kid"]
    assert [(k["kid"], k["public"]) for k in document["retired"]] == [
        (first["kid"], first["public"])
    ]
    assert "old ledger verifier key" in rotated.output


def test_a_prepared_broker_key_is_pinned_before_the_rotation_makes_it_current(
    tmp_path: Path,
) -> None:
    from trm_broker.node.trust import read_pins

    path, operator = tmp_path / "broker-key.json", tmp_path / "operator.keys.json"
    assert CliRunner().invoke(app, ["keys", "new-broker", "--key-file", str(path)]).exit_code == 0
    KeySet.generate("operator.trm").write(operator)
    prepared = CliRunner().invoke(
        app, ["keys", "rotate-broker", "--prepare", "--key-file", str(path)]
    )
    assert prepared.exit_code == 0, prepared.output
    document = json.loads(path.read_text(encoding="utf-8"))
    current, following = document["signing"]["kid"], document["next"]["kid"]
    assert f"pin it at the nodes: {following}=" in prepared.output

    # What a node is to pin: the current key and the next, and the operator's.
    printed = CliRunner().invoke(
        app, ["node", "pins", "--broker-key-file", str(path), "--operator-key", str(operator)]
    )
    assert printed.exit_code == 0, printed.output
    values = dict(
        line.split("=", 1) for line in printed.output.splitlines() if line.startswith("TRM_")
    )
    broker_pins = read_pins(values["TRM_NODE_BROKER_KEYS"], "TRM_NODE_BROKER_KEYS")
    operator_pins = read_pins(values["TRM_NODE_OPERATOR_KEYS"], "TRM_NODE_OPERATOR_KEYS")
    assert list(broker_pins or {}) == [current, following]
    assert list(operator_pins or {}) == [KeySet.read(operator).signing.kid]

    # The rotation makes the prepared key current (not a new one nobody pinned).
    rotated = CliRunner().invoke(app, ["keys", "rotate-broker", "--key-file", str(path)])
    assert rotated.exit_code == 0, rotated.output
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["signing"]["kid"] == following
    assert "next" not in after
    assert [k["kid"] for k in after["retired"]] == [current]


def test_revoke_reads_a_key_id_that_starts_with_a_dash_as_the_key_id(tmp_path: Path) -> None:
    """A key id is base64url: one in 64 starts with "-", and must not be taken for an option."""
    missing = tmp_path / "operator.keys.json"
    arguments = ["participants", "revoke", "ng.naptip", "-Fq3kid", "--operator-key", str(missing)]
    result = CliRunner().invoke(app, arguments)
    assert "No such option" not in result.output
    assert str(missing.name) in result.output
