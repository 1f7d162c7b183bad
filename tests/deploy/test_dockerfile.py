"""The Dockerfile: a builder stage makes the wheel, the final stage is the venv alone, run by
an unprivileged user, with a health check that works for every role. No image is built
here (no Docker engine): the file is read, and its health check command is run for real."""

from __future__ import annotations

import http.server
import importlib
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.deploy.manifests import (
    DOCKERFILE,
    ROOT,
    Stage,
    cli_problem,
    dockerfile_stages,
    dockerignore_patterns,
    effective_settings,
    in_build_context,
    role_of,
    serves,
)
from trm_broker.cli import app as cli_app
from trm_broker.settings import Settings

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "libc6-dev", "python3-dev")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_the_image_runs_on_the_python_the_venv_was_built_with_and_the_package_supports(
    stages: list[Stage], final: Stage
) -> None:
    # A venv's scripts point at the interpreter that made it: the final stage must run on
    # the same base image as the stage it copies the venv from, or `trm-broker` breaks.
    assert len(stages) >= 2, "multi-stage: a builder, then the image"
    (copied,) = [item for item in final.all("COPY") if item.arguments.startswith("--from=")]
    builder = next(s for s in stages if s.name == copied.arguments.split()[0].split("=", 1)[1])
    assert builder.base == final.base, (builder.base, final.base)
    # ... and that Python is one the package declares it runs on (pyproject requires-python).
    match = re.fullmatch(r"python:(\d+\.\d+)(?:[.-]\S*)?", final.base)
    assert match is not None, f"{final.base}: no Python version in the image tag"
    with (ROOT / "pyproject.toml").open("rb") as handle:
        requires = tomllib.load(handle)["project"]["requires-python"]
    assert SpecifierSet(requires).contains(match[1]), (final.base, requires)


def test_the_builder_builds_a_wheel_and_installs_it_into_the_venv_the_image_copies(
    stages: list[Stage], final: Stage
) -> None:
    copied = [item for item in final.all("COPY") if item.arguments.startswith("--from=")]
    assert len(copied) == 1, "the final stage copies one thing from the builder: the venv"
    match = re.fullmatch(r"--from=(\S+)\s+(\S+)\s+(\S+)", copied[0].arguments)
    assert match is not None, copied[0].arguments
    source_stage, source, target = match.groups()
    builder = next(stage for stage in stages if stage.name == source_stage)
    assert source == target
    run = " ".join(item.arguments for item in builder.all("RUN"))
    assert "pip wheel" in run, "the package is built as a wheel (which carries migrations/)"
    assert f"python -m venv {source}" in run
    assert re.search(rf"{re.escape(source)}/bin/pip install \S+\.whl", run), run
    assert any(item.arguments.startswith(f"PATH={source}/bin:") for item in final.all("ENV")), (
        "the venv's bin comes first on PATH"
    )


def test_the_final_stage_copies_no_source_and_installs_no_build_tools(final: Stage) -> None:
    assert all(item.arguments.startswith("--from=") for item in final.all("COPY"))
    assert not final.all("ADD")
    for item in final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", item.arguments))
        assert not words & set(BUILD_TOOLS), item.arguments
        assert "apt-get" not in words, "nothing is installed in the final image"


def test_the_final_stage_runs_as_an_unprivileged_user_who_owns_its_working_folder(
    final: Stage,
) -> None:
    user = final.last("USER")
    assert user is not None, "USER is set in the final stage"
    name = user.arguments.split(":")[0]
    assert name not in ("root", "0"), user.arguments
    assert final.instructions.index(user) > max(
        final.instructions.index(item) for item in final.all("RUN")
    ), "USER comes after the last RUN, so nothing at run time is root"
    # The relative defaults (./var/trm-broker.db, ./var/broker-key.json) are written in the
    # working folder: the user must be the one the image creates, and own that folder.
    run = " ".join(item.arguments for item in final.all("RUN"))
    created = re.search(r"useradd\b[^&;]*?--uid\s+(\d+)[^&;]*?\s(\w+)\s*(?:&&|;|$)", run)
    assert created is not None, "the image creates its user"
    uid, account = created.groups()
    assert name in (uid, account), f"USER {user.arguments} is not the created {account}"
    workdir = final.last("WORKDIR")
    assert workdir is not None
    owned = re.search(rf"install\s+--directory\s+--owner\s+{account}\b[^&;]*\s(\S+)", run)
    assert owned is not None, f"no folder is made for {account}"
    assert owned[1] == workdir.arguments, (owned[1], workdir.arguments)


def test_the_entrypoint_is_the_packages_cli_and_the_default_command_runs_the_broker(
    final: Stage,
) -> None:
    entrypoint, command = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None
    assert command is not None
    # The entrypoint is the console script the wheel installs, bound to the CLI app that
    # cli_problem asks; the default command is one of its commands, the broker's role.
    (program,) = entrypoint.exec_form()
    with (ROOT / "pyproject.toml").open("rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    module, _, attribute = scripts[program].partition(":")
    assert getattr(importlib.import_module(module), attribute) is cli_app
    assert cli_problem(command.exec_form()) is None, cli_problem(command.exec_form())
    assert role_of(command.exec_form()) == "broker"


def test_the_environment_it_sets_is_valid_settings_and_exposes_every_roles_port(
    final: Stage,
) -> None:
    environment: dict[str, str] = {}
    for item in final.all("ENV"):
        for pair in shlex.split(item.arguments):
            name, _, value = pair.partition("=")
            if name.startswith("TRM_"):
                environment[name] = value
    settings = effective_settings(environment)
    everywhere = "0.0.0.0"  # noqa: S104 - a container must listen beyond its own loopback
    assert settings.host == settings.node_host == everywhere
    exposed = {int(port) for item in final.all("EXPOSE") for port in item.arguments.split()}
    assert exposed == {settings.port, settings.worker_port, settings.node_port}


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_local(
    stages: list[Stage],
) -> None:
    patterns = dockerignore_patterns()
    for stage in stages:
        for item in stage.all("COPY"):
            if item.arguments.startswith("--from="):
                continue
            for source in item.arguments.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert in_build_context(source, patterns), f"{source} is in .dockerignore"
    for local in (".venv", "var", ".git", "tests", "deploy", "trm_broker.egg-info"):
        assert not in_build_context(local, patterns), f"{local} would be sent to the build"


# --- the health check, run for real ---------------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), handler
    finally:
        server.shutdown()
        server.server_close()


def _run_health_check(final: Stage, ports: dict[str, int]) -> int:
    check = final.last("HEALTHCHECK")
    assert check is not None
    command = check.arguments.split(" CMD ", 1)[1]
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TRM_")}
    environment |= {name: str(port) for name, port in ports.items()}
    # The image's python is the venv's; here it is the one running the tests.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    return subprocess.run(["/bin/sh", "-c", command], env=environment, timeout=60).returncode


@pytest.mark.parametrize("role_port", ["TRM_PORT", "TRM_WORKER_PORT", "TRM_NODE_PORT"])
def test_the_health_check_passes_for_whichever_role_answers_healthz(
    final: Stage, health_server: tuple[int, type[_Health]], role_port: str
) -> None:
    port, _ = health_server
    ports = {name: _free_port() for name in ("TRM_PORT", "TRM_WORKER_PORT", "TRM_NODE_PORT")}
    ports[role_port] = port
    assert _run_health_check(final, ports) == 0


def test_the_health_check_fails_when_healthz_fails_or_nothing_listens(
    final: Stage, health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    handler.status = 503
    others = {"TRM_WORKER_PORT": _free_port(), "TRM_NODE_PORT": _free_port()}
    assert _run_health_check(final, {"TRM_PORT": port, **others}) != 0
    assert _run_health_check(final, {"TRM_PORT": _free_port(), **others}) != 0


def test_the_health_check_asks_a_route_every_role_serves_on_the_settings_ports(
    final: Stage,
) -> None:
    check = final.last("HEALTHCHECK")
    assert check is not None
    paths = set(re.findall(r"http://127\.0\.0\.1:\{[^}]*\}(/[\w/-]*)", check.arguments))
    assert len(paths) == 1, f"one health route asked: {paths}"
    (path,) = paths
    for role in ("broker", "worker", "node"):
        assert serves(role, path), f"the {role} has no {path}"
    defaults = dict(re.findall(r"\$\{(TRM_\w+):-(\d+)\}", check.arguments))
    fields = Settings.model_fields
    assert defaults == {
        "TRM_PORT": str(fields["port"].default),
        "TRM_WORKER_PORT": str(fields["worker_port"].default),
        "TRM_NODE_PORT": str(fields["node_port"].default),
    }
