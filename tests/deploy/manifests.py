"""Readers and checks shared by the deployment tests: the Dockerfile's stages, compose
interpolation, and what the package itself says (its CLI, its settings, its apps' routes).

Every check answers with what is wrong (or nothing), so the tests can also show that each
check refuses what it should.
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import typer.main
import yaml
from typer.testing import CliRunner

from trm_broker.cli import app as cli_app
from trm_broker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"

TRM_VARIABLE = re.compile(r"\bTRM_[A-Z][A-Z0-9_]*\b")

# What each role of the one image runs, and the setting that holds its port.
ROLES: Mapping[tuple[str, ...], str] = {
    ("serve",): "broker",
    ("worker",): "worker",
    ("node", "serve"): "node",
    ("db", "upgrade"): "migrate",
}
PORT_SETTING: Mapping[str, str] = {"broker": "port", "worker": "worker_port", "node": "node_port"}


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def deploy_files() -> list[Path]:
    """Every deployment file a test reads: the Dockerfile, .dockerignore and deploy/."""
    files = [DOCKERFILE, DOCKERIGNORE]
    files += sorted(path for path in DEPLOY.rglob("*") if path.is_file())
    return files


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [document for document in yaml.safe_load_all(handle) if document is not None]


# --- settings -------------------------------------------------------------------------------


def setting_of(variable: str) -> str | None:
    """The Settings field an environment variable sets, or None if it sets none."""
    if not variable.startswith("TRM_"):
        return None
    name = variable.removeprefix("TRM_").lower()
    return name if name in Settings.model_fields else None


def unknown_variables(text: str) -> set[str]:
    """The TRM_ names in ``text`` that are no setting (a typo is silently ignored at run time:
    Settings has extra="ignore")."""
    return {name for name in TRM_VARIABLE.findall(text) if setting_of(name) is None}


def effective_settings(environment: Mapping[str, str]) -> Settings:
    """Validate ``environment`` (TRM_ variables and their values) as the process would read
    them; raises pydantic's ValidationError on a value the setting refuses."""
    unknown = sorted(name for name in environment if setting_of(name) is None)
    assert not unknown, f"not settings: {unknown}"
    values = {setting_of(name): value for name, value in environment.items()}
    return Settings.model_validate(values)


def port_of(role: str, environment: Mapping[str, str]) -> int:
    """The port a role listens on with this environment (explicit, or the setting's default)."""
    return int(getattr(effective_settings(environment), PORT_SETTING[role]))


# --- the command line -----------------------------------------------------------------------


def cli_problem(argv: Sequence[str]) -> str | None:
    """Why ``trm-broker *argv`` is not a command the package has, or None if it is one."""
    line = " ".join(["trm-broker", *argv])
    result = CliRunner().invoke(cli_app, [*argv, "--help"])
    if result.exit_code != 0:
        return f"`{line} --help` exits {result.exit_code}: {result.output.strip()}"
    # Typer carries its own copy of click, so groups are told by what they can do.
    command: Any = typer.main.get_command(cli_app)
    for token in argv:
        if not hasattr(command, "get_command"):
            break  # the rest are the command's own arguments
        subcommand = command.get_command(command.context_class(command), token)
        if subcommand is None:
            return f"`{line}`: no command {token!r}"
        command = subcommand
    if hasattr(command, "get_command"):
        return f"`{line}` names a group of commands, not a command"
    return None


def role_of(argv: Sequence[str]) -> str:
    """Which role of the image ``trm-broker *argv`` runs (broker, worker, node, migrate)."""
    for prefix, role in ROLES.items():
        if tuple(argv[: len(prefix)]) == prefix:
            return role
    raise AssertionError(f"`trm-broker {' '.join(argv)}` is not a role of the image")


@cache
def _app(role: str) -> Any:
    from trm_broker.api.app import create_app
    from trm_broker.node.app import create_node_app

    settings = Settings()
    if role == "node":
        return create_node_app(settings)
    return create_app(settings, worker=role == "worker")


def serves(role: str, path: str) -> bool:
    """Whether the app of ``role`` routes GET ``path``: asked of the app itself, unstarted
    (no database, no keys), so a handler may fail, but an unknown path is a 404."""

    async def get() -> int:
        # ASGITransport runs no lifespan: the app is not started.
        transport = httpx.ASGITransport(app=_app(role), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return (await client.get(path)).status_code

    return asyncio.run(get()) not in (404, 405)


# --- compose ----------------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<rest>[^}]*))?\}")
REQUIRED = "required-value"


def interpolate(value: str) -> str:
    """Compose interpolation as `docker compose config` does it with nothing set: defaults
    (``${X:-d}``) are used, required values (``${X:?msg}``) become a placeholder."""

    def replace(match: re.Match[str]) -> str:
        op = match["op"]
        assert op is not None, f"${{{match['name']}}} has neither a default nor `:?`"
        return match["rest"] if op.endswith("-") else REQUIRED

    return INTERPOLATION.sub(replace, value)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment (map or list form), interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(name): interpolate(str(value)) for name, value in raw.items()}


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form's arguments; fails on the shell form."""
        value = json.loads(self.arguments)
        assert isinstance(value, list), f"{self.keyword} {self.arguments} is not exec form"
        return [str(item) for item in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, with global ARG defaults substituted into FROM."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit inside a continued instruction, too
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            arguments[name] = default
        elif keyword == "FROM":
            for name, value in arguments.items():
                rest = rest.replace(f"${{{name}}}", value).replace(f"${name}", value)
            base, _, alias = rest.partition(" AS ")
            if not alias:
                base, _, alias = rest.partition(" as ")
            stages.append(Stage(base.strip(), alias.strip() or None))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return stages


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def in_build_context(path: str, patterns: Iterable[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the context): the last pattern that
    matches decides."""
    kept = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.removeprefix("!").strip("/")
        if fnmatch(path, bare) or fnmatch(path, bare.removeprefix("**/")):
            kept = negated
    return kept
