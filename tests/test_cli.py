"""`trm-broker keys new`: a private key file for the node, the public half to register."""

from __future__ import annotations

import json
import stat
from pathlib import Path

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
