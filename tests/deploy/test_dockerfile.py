"""The Dockerfile: a builder stage makes the wheel, the final stage is the venv alone, run by
an unprivileged user, with a health check that works for every role. No image is built
here (no Docker engine): the file is read, and its health check command is run for real."""

from __future__ import annotations

import http.server
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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
)
from trm_broker.settings import Settings

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "libc6-dev", "python3-dev")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_it_has_a_builder_and_a_final_stage_on_slim_python_3_11(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage: a builder, then the image"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base


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


def test_the_final_stage_runs_as_an_unprivileged_user(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "USER is set in the final stage"
    name = user.arguments.split(":")[0]
    assert name not in ("root", "0"), user.arguments
    assert final.instructions.index(user) > max(
        final.instructions.index(item) for item in final.all("RUN")
    ), "USER comes after the last RUN, so nothing at run time is root"


def test_entrypoint_is_trm_broker_and_the_default_command_is_serve(final: Stage) -> None:
    entrypoint, command = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None
    assert command is not None
    assert entrypoint.exec_form() == ["trm-broker"]
    assert command.exec_form() == ["serve"]
    assert cli_problem(command.exec_form()) is None
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


def test_the_health_check_defaults_are_the_settings_defaults(final: Stage) -> None:
    check = final.last("HEALTHCHECK")
    assert check is not None
    assert "/healthz" in check.arguments
    defaults = dict(re.findall(r"\$\{(TRM_\w+):-(\d+)\}", check.arguments))
    fields = Settings.model_fields
    assert defaults == {
        "TRM_PORT": str(fields["port"].default),
        "TRM_WORKER_PORT": str(fields["worker_port"].default),
        "TRM_NODE_PORT": str(fields["node_port"].default),
    }
