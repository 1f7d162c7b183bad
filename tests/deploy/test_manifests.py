"""What holds for every deployment file: it parses, every TRM_ name in it is a setting, and
the checks the other tests in this folder rely on refuse what they should."""

from __future__ import annotations

import configparser
from pathlib import Path

import pydantic
import pytest

from tests.deploy.manifests import (
    DEPLOY,
    ROOT,
    cli_problem,
    deploy_files,
    dockerfile_stages,
    effective_settings,
    in_build_context,
    load_yaml_documents,
    role_of,
    serves,
    unknown_variables,
)


def test_the_deployment_files_are_there() -> None:
    names = {path.relative_to(DEPLOY).as_posix() for path in DEPLOY.rglob("*") if path.is_file()}
    for expected in (
        "compose.yaml",
        "nginx.conf",
        "kubernetes/kustomization.yaml",
        "systemd/trm-broker.service",
        "systemd/trm-broker-worker.service",
        "systemd/trm-broker-migrate.service",
        "systemd/trm-node.service",
    ):
        assert expected in names


@pytest.mark.parametrize("path", deploy_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_file_parses_and_names_only_real_settings(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        assert load_yaml_documents(path), path
    elif path.suffix == ".service":
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(text)
        assert parser.has_section("Service")
    elif path.name == "Dockerfile":
        assert dockerfile_stages(text)
    assert not unknown_variables(text), f"{path.name}: {sorted(unknown_variables(text))}"


def test_unknown_variables_finds_names_that_are_no_setting() -> None:
    assert unknown_variables("TRM_PORT=1 TRM_NODE_PORT=2 TRM_PROT=3 TRM_HEALTH_PORT") == {
        "TRM_PROT",
        "TRM_HEALTH_PORT",
    }


def test_effective_settings_refuses_unknown_names_and_bad_values() -> None:
    assert effective_settings({"TRM_RUN_DISPATCHER": "false"}).run_dispatcher is False
    assert effective_settings({"TRM_NODE_KEY_FILES": "/a,/b"}).node_key_files == [
        Path("/a"),
        Path("/b"),
    ]
    with pytest.raises(AssertionError):
        effective_settings({"TRM_DISPATCHER": "false"})
    with pytest.raises(pydantic.ValidationError):
        effective_settings({"TRM_PORT": "http"})
    with pytest.raises(pydantic.ValidationError):
        effective_settings({"TRM_LEDGER_ORIGIN": "has space"})


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["serve"], "broker"),
        (["worker"], "worker"),
        (["node", "serve"], "node"),
        (["db", "upgrade"], "migrate"),
        (["db", "upgrade", "head"], "migrate"),
    ],
)
def test_cli_problem_accepts_the_roles_commands(argv: list[str], role: str) -> None:
    assert cli_problem(argv) is None
    assert role_of(argv) == role


@pytest.mark.parametrize(
    "argv", [["server"], ["node"], ["db"], [], ["node", "run"], ["worker", "--no-such-option"]]
)
def test_cli_problem_refuses_what_is_no_command(argv: list[str]) -> None:
    assert cli_problem(argv) is not None


def test_serves_tells_routed_paths_from_unknown_ones() -> None:
    assert serves("broker", "/readyz")
    assert serves("worker", "/healthz")
    assert serves("node", "/healthz")
    assert not serves("node", "/readyz")
    assert not serves("broker", "/no-such-path")


def test_in_build_context_lets_the_last_matching_pattern_decide() -> None:
    patterns = ["*", "!src", "!README.md", "**/__pycache__"]
    assert in_build_context("src", patterns)
    assert in_build_context("README.md", patterns)
    assert not in_build_context("secrets", patterns)
    assert not in_build_context("src/__pycache__", patterns)


def test_dockerfile_stages_reads_continuations_args_and_stage_names() -> None:
    text = (
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS builder\n"
        "RUN one \\\n"
        "    # a comment inside\n"
        "    && two\n"
        "FROM ${BASE}\n"
        'CMD ["serve"]\n'
    )
    builder, final = dockerfile_stages(text)
    assert (builder.base, builder.name, final.name) == ("python:3.11-slim", "builder", None)
    assert [item.arguments for item in builder.all("RUN")] == ["one && two"]
    command = final.last("CMD")
    assert command is not None
    assert command.exec_form() == ["serve"]
