"""The operator's CLI against a real broker process: bootstrap, then signed registry changes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

from trm_broker.cli import app
from trm_broker.dev.cluster import LocalCluster


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_operator_bootstraps_then_drives_the_registry_with_signed_calls(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        cluster.migrate()
        operator = cluster.init_operator("operator.trm", "AT")
        broker = cluster.start_broker()
        signed = ["--broker-url", broker.url, "--operator-key", str(tmp_path / "operator-key.json")]

        # A second bootstrap is refused: later operators are added by a signed call.
        again = cluster.launcher.run(
            [
                "operator",
                "init",
                "--id",
                "operator.two",
                "--country",
                "AT",
                "--operator-key",
                str(tmp_path / "other.json"),
            ],
            cluster.broker_env(),
            tmp_path,
        )
        assert again.returncode == 1
        assert "already registered" in again.stderr
        assert not (tmp_path / "other.json").exists()

        public = tmp_path / "ng.public.json"
        code, out = cli("keys", "new", "ng.naptip", "--out", str(tmp_path / "ng.keys.json"))
        assert code == 0, out
        public.write_text(out)
        code, out = cli(
            "participants", "add", str(public), "--kind", "focal_point", "--country", "NG", *signed
        )
        assert code == 0, out
        assert json.loads(out)["changes"][0]["operator"] == operator.participant

        rotated = tmp_path / "ng.rotated.json"
        code, out = cli("keys", "new", "ng.naptip", "--out", str(tmp_path / "ng.keys-2.json"))
        rotated.write_text(out)
        new_kid = json.loads(out)["keys"]["signing"]["kid"]
        code, out = cli(
            "participants",
            "rotate",
            "ng.naptip",
            str(rotated),
            "--use",
            "sig",
            "--overlap-seconds",
            "3600",
            *signed,
        )
        assert code == 0, out
        old_kid = json.loads(public.read_text())["keys"]["signing"]["kid"]
        code, out = cli("participants", "revoke", "ng.naptip", old_kid, *signed)
        assert code == 0, out

        code, out = cli("participants", "list", "--broker-url", broker.url)
        assert code == 0, out
        assert "ng.naptip  focal_point  NG  pull" in out
        assert f"sig Ed25519          {old_kid}  revoked" in out
        assert f"sig Ed25519          {new_kid}  current" in out

        registry = httpx.get(broker.url + "/v1/participants").json()["participants"]
        ng = next(p for p in registry if p["id"] == "ng.naptip")
        assert [c["action"] for c in ng["changes"]] == [
            "participant.registered",
            "key.added",
            "key.revoked",
        ]

        # A participant's own key file does not make it an operator.
        code, out = cli(
            "participants",
            "revoke",
            "ng.naptip",
            new_kid,
            "--broker-url",
            broker.url,
            "--operator-key",
            str(tmp_path / "ng.keys-2.json"),
        )
        assert code == 1
        assert "403" in out
