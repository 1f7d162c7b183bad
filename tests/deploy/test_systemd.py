"""deploy/systemd: the units run real `trm-broker` commands with valid settings, the
migration runs before the broker and the worker, keys arrive as credentials, and every
service is hardened with a writable state folder only."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path, PurePosixPath

import pytest

from tests.deploy.manifests import SYSTEMD, cli_problem, effective_settings, role_of

CREDENTIALS = "/run/credentials"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}


class Unit:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.parser = configparser.ConfigParser(strict=False, interpolation=None)
        self.parser.optionxform = str  # type: ignore[assignment,method-assign]
        self.parser.read(path, encoding="utf-8")
        # configparser keeps the last of repeated keys; systemd accumulates some of them.
        self.repeated: dict[str, list[str]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith(("#", ";", "[")):
                self.repeated.setdefault(key.strip(), []).append(value.strip())

    def get(self, section: str, key: str) -> str | None:
        return self.parser.get(section, key, fallback=None)

    def argv(self) -> list[str]:
        start = self.get("Service", "ExecStart")
        assert start is not None, self.name
        return shlex.split(start)

    def role(self) -> str:
        return role_of(self.argv()[1:])

    def environment(self) -> dict[str, str]:
        """TRM_ variables from the EnvironmentFile (the example beside the unit) and the
        unit's Environment= lines, with %d (the credentials folder) expanded."""
        environment: dict[str, str] = {}
        for file in self.repeated.get("EnvironmentFile", []):
            environment |= read_environment_file(SYSTEMD / PurePosixPath(file.lstrip("-")).name)
        for line in self.repeated.get("Environment", []):
            for assignment in shlex.split(line):
                name, _, value = assignment.partition("=")
                environment[name] = value.replace("%d", f"{CREDENTIALS}/{self.name}")
        return environment

    def credentials(self) -> set[str]:
        return {item.split(":", 1)[0] for item in self.repeated.get("LoadCredential", [])}


def read_environment_file(path: Path) -> dict[str, str]:
    assert path.is_file(), f"{path.name} is not in deploy/systemd"
    environment: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not NAME=value"
            environment[name.strip()] = value.strip()
    return environment


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {path.name: Unit(path) for path in sorted(SYSTEMD.glob("*.service"))}


def _by_role(units: dict[str, Unit], role: str) -> list[Unit]:
    return [unit for unit in units.values() if unit.role() == role]


def test_each_role_has_a_unit(units: dict[str, Unit]) -> None:
    roles = sorted(unit.role() for unit in units.values())
    assert roles == ["broker", "migrate", "node", "worker"]


def test_exec_start_runs_a_trm_broker_command(units: dict[str, Unit]) -> None:
    for unit in units.values():
        program, *arguments = unit.argv()
        assert PurePosixPath(program).is_absolute(), unit.name
        assert PurePosixPath(program).name == "trm-broker", unit.name
        assert cli_problem(arguments) is None, (unit.name, cli_problem(arguments))


def test_the_migration_is_a_oneshot_run_before_the_broker_and_the_worker(
    units: dict[str, Unit],
) -> None:
    (migrate,) = _by_role(units, "migrate")
    assert migrate.get("Service", "Type") == "oneshot"
    assert "Install" not in migrate.parser, "started only as a dependency"
    for unit in [*_by_role(units, "broker"), *_by_role(units, "worker")]:
        for key in ("Requires", "After"):
            value = unit.get("Unit", key)
            assert value is not None, (unit.name, key)
            assert migrate.name in value.split(), (unit.name, key)


def test_every_service_is_hardened_and_writes_only_its_state_folder(
    units: dict[str, Unit],
) -> None:
    users = {
        line.split()[1]
        for line in (SYSTEMD / "trm-broker.sysusers.conf").read_text().splitlines()
        if line.startswith("u ")
    }
    for unit in units.values():
        for key, value in HARDENING.items():
            assert unit.get("Service", key) == value, (unit.name, key)
        user = unit.get("Service", "User")
        assert user in users, f"{unit.name}: User={user} is not created by sysusers"
        assert user not in ("root", "0")
        state = unit.get("Service", "StateDirectory")
        assert state, unit.name
        assert unit.get("Service", "WorkingDirectory") == f"/var/lib/{state}", unit.name


def test_every_environment_is_valid_settings(units: dict[str, Unit]) -> None:
    for unit in units.values():
        effective_settings(unit.environment())  # raises on a bad name or value


def test_keys_arrive_as_credentials_of_the_unit(units: dict[str, Unit]) -> None:
    for unit in units.values():
        environment = unit.environment()
        settings = effective_settings(environment)
        files = {
            "broker": [settings.broker_key_file],
            "worker": [settings.broker_key_file],
            "node": settings.node_key_files,
        }.get(unit.role(), [])
        for path in files:
            pure = PurePosixPath(path)
            assert pure.parent == PurePosixPath(CREDENTIALS, unit.name), (unit.name, pure)
            assert pure.name in unit.credentials(), (unit.name, pure.name)


def test_sqlite_files_are_in_the_state_folder(units: dict[str, Unit]) -> None:
    for unit in units.values():
        settings = effective_settings(unit.environment())
        state = PurePosixPath("/var/lib", unit.get("Service", "StateDirectory") or "")
        url = settings.node_database_url if unit.role() == "node" else settings.database_url
        if url.startswith("sqlite"):
            path = PurePosixPath(url.split(":///", 1)[1])
            # relative paths resolve in WorkingDirectory, which is the state folder
            assert not path.is_absolute() or path.is_relative_to(state), (unit.name, url)


def test_nodes_address_the_brokers_public_url(units: dict[str, Unit]) -> None:
    (broker,) = _by_role(units, "broker")
    public = effective_settings(broker.environment()).public_url
    assert public is not None, "set behind the host's TLS proxy"
    for unit in _by_role(units, "node"):
        assert effective_settings(unit.environment()).node_broker_url == public
