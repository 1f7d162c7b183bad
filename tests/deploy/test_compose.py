"""deploy/compose.yaml and its nginx.conf: read and cross-checked (references resolve,
commands and settings are the package's, the proxy fronts exactly the broker replicas and
every caller signs the one public URL). Nothing is started: no Docker engine here."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from tests.deploy.manifests import (
    DEPLOY,
    cli_problem,
    effective_settings,
    environment_of,
    interpolate,
    load_yaml,
    port_of,
    role_of,
    serves,
)
from trm_broker.domain.inbox_url import InboxPolicy, InboxRefused

COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "nginx.conf"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

Service = Mapping[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = load_yaml(COMPOSE)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _trm_services(services: Mapping[str, Service]) -> dict[str, Service]:
    return {name: s for name, s in services.items() if s.get("image", "").startswith("trm-broker")}


def _by_role(services: Mapping[str, Service], role: str) -> dict[str, Service]:
    return {
        name: service
        for name, service in _trm_services(services).items()
        if role_of(service["command"]) == role
    }


def _healthcheck_url(service: Service) -> tuple[int, str]:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", test)
    assert match is not None, test
    return int(match[1]), match[2]


def test_the_image_is_built_from_the_repositorys_dockerfile(
    services: Mapping[str, Service],
) -> None:
    trm = _trm_services(services)
    assert trm, "services run the trm-broker image"
    for name, service in trm.items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert (context / build["dockerfile"]).is_file(), name
    assert len({s["image"] for s in trm.values()}) == 1, "one image for every role"


def test_every_command_is_a_trm_broker_command(services: Mapping[str, Service]) -> None:
    for name, service in _trm_services(services).items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: exec form, no shell"
        assert cli_problem(command) is None, (name, cli_problem(command))


def test_it_runs_every_role_with_replicated_brokers_on_one_postgresql(
    services: Mapping[str, Service],
) -> None:
    # What the deployment does, not how many lines it has: the schema is migrated once,
    # the broker is replicated (one may go away), deliveries have a worker, and two nodes
    # exchange through them; the replicas share one database, a PostgreSQL service's.
    assert len(_by_role(services, "migrate")) == 1
    assert len(_by_role(services, "broker")) >= 2
    assert _by_role(services, "worker")
    assert len(_by_role(services, "node")) >= 2
    databases = {
        make_url(effective_settings(environment_of(service)).database_url)
        for role in ("migrate", "broker", "worker")
        for service in _by_role(services, role).values()
    }
    assert len({(url.host, url.database) for url in databases}) == 1, databases
    url = next(iter(databases))
    assert url.get_backend_name() == "postgresql", url
    host = str(url.host)
    assert host in services, f"{host} is no service of the file"
    assert services[host].get("image", "").startswith("postgres:"), host


def test_depends_on_names_services_with_known_conditions(services: Mapping[str, Service]) -> None:
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            assert condition in CONDITIONS, (name, condition)
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_brokers_and_workers_start_after_the_migration_succeeded(
    services: Mapping[str, Service],
) -> None:
    (migrate,) = _by_role(services, "migrate")
    assert services[migrate].get("restart") == "no", "the migration runs once"
    for role in ("broker", "worker"):
        for name, service in _by_role(services, role).items():
            depends = service["depends_on"]
            assert depends[migrate]["condition"] == "service_completed_successfully", name


def test_secrets_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared_secrets = compose.get("secrets") or {}
    declared_volumes = compose.get("volumes") or {}
    for name, service in compose["services"].items():
        for secret in service.get("secrets") or []:
            source = secret if isinstance(secret, str) else secret["source"]
            assert source in declared_secrets, f"{name}: secret {source} is not declared"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
    for name, secret in declared_secrets.items():
        path = (COMPOSE.parent / secret["file"]).resolve()
        # Key files live in deploy/secrets, whose .gitignore keeps them out of the repository.
        assert path.parent == (DEPLOY / "secrets").resolve(), name
    assert (DEPLOY / "secrets" / ".gitignore").read_text().split()[0] == "*"


def test_key_files_are_mounted_secrets_of_that_service(services: Mapping[str, Service]) -> None:
    for name, service in _trm_services(services).items():
        mounted = {
            secret if isinstance(secret, str) else secret.get("target", secret["source"])
            for secret in service.get("secrets") or []
        }
        for variable, value in environment_of(service).items():
            if variable.endswith(("_KEY_FILE", "_KEY_FILES")):
                for path in value.split(","):
                    pure = PurePosixPath(path)
                    assert pure.parent == PurePosixPath("/run/secrets"), (name, variable)
                    assert pure.name in mounted, f"{name}: {variable} names an unmounted secret"


def test_every_environment_is_valid_settings(services: Mapping[str, Service]) -> None:
    for name, service in _trm_services(services).items():
        effective_settings(environment_of(service))  # raises on a bad name or value
        assert name


def test_brokers_leave_delivery_to_the_worker(services: Mapping[str, Service]) -> None:
    for name, service in _by_role(services, "broker").items():
        assert effective_settings(environment_of(service)).run_dispatcher is False, name
    for name, service in _by_role(services, "worker").items():
        settings = effective_settings(environment_of(service))
        assert settings.database_url.startswith("postgresql+asyncpg://"), name


def test_health_checks_use_each_roles_port_and_endpoint(services: Mapping[str, Service]) -> None:
    for name, service in _trm_services(services).items():
        role = role_of(service["command"])
        if role == "migrate":
            continue
        port, path = _healthcheck_url(service)
        assert port == port_of(role, environment_of(service)), name
        assert serves(role, path), f"{name}: the {role} has no {path}"


def test_nodes_keep_their_database_on_a_volume(services: Mapping[str, Service]) -> None:
    for name, service in _by_role(services, "node").items():
        url = effective_settings(environment_of(service)).node_database_url
        path = PurePosixPath(url.split(":///", 1)[1])
        targets = [PurePosixPath(volume.split(":")[1]) for volume in service.get("volumes") or []]
        assert any(path.is_relative_to(target) for target in targets), name


# --- the proxy and the one public URL ---------------------------------------------------------


def _nginx() -> str:
    return NGINX.read_text(encoding="utf-8")


def _proxy(services: Mapping[str, Service]) -> tuple[str, Service]:
    proxies = {
        name: service
        for name, service in services.items()
        if any("nginx.conf" in volume for volume in service.get("volumes") or [])
    }
    assert len(proxies) == 1, "one reverse proxy, configured by deploy/nginx.conf"
    return next(iter(proxies.items()))


def _host_port(mapping: str) -> int:
    """The host side of a compose port mapping: [ip:]host:container, or container alone."""
    parts = mapping.split(":")
    return int(parts[-2] if len(parts) > 1 else parts[0])


def test_the_proxy_fronts_exactly_the_broker_replicas(services: Mapping[str, Service]) -> None:
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", _nginx(), re.DOTALL)
    assert upstream is not None
    servers = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", upstream[2], re.MULTILINE))
    brokers = _by_role(services, "broker")
    assert servers == {
        f"{name}:{port_of('broker', environment_of(service))}" for name, service in brokers.items()
    }
    assert re.search(rf"proxy_pass\s+http://{upstream[1]};", _nginx())
    proxy_name, proxy = _proxy(services)
    for name in brokers:
        assert proxy["depends_on"][name]["condition"] == "service_healthy", proxy_name


def test_every_caller_signs_the_proxys_url(services: Mapping[str, Service]) -> None:
    proxy_name, proxy = _proxy(services)
    listen = re.search(r"^\s*listen\s+(\d+);", _nginx(), re.MULTILINE)
    assert listen is not None
    aliases = proxy.get("networks", {}).get("default", {}).get("aliases", [])
    public = {
        effective_settings(environment_of(service)).public_url
        for service in _by_role(services, "broker").values()
    }
    assert len(public) == 1, "the replicas share one public URL"
    (url,) = public
    assert url is not None
    parts = urlsplit(url)
    assert parts.hostname in {proxy_name, *aliases}, "TRM_PUBLIC_URL is the proxy's"
    assert parts.port == int(listen[1])
    published = {_host_port(str(port)) for port in proxy.get("ports", [])}
    assert parts.port in published, "reachable from the host at the same port"
    for name, service in _by_role(services, "node").items():
        assert effective_settings(environment_of(service)).node_broker_url == url, name


def test_nodes_the_broker_could_not_push_to_pull(services: Mapping[str, Service]) -> None:
    policy = InboxPolicy(allow_loopback=False, allow_private=True)
    for name, service in _by_role(services, "node").items():
        settings = effective_settings(environment_of(service))
        assert settings.node_public_url is not None, f"{name} listens beyond loopback"
        try:
            policy.check_url(settings.node_public_url.rstrip("/") + "/inbox")
        except InboxRefused:
            assert settings.node_pull, f"{name}: its inbox URL would be refused; pull instead"


def test_interpolations_have_a_default_or_are_required() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    interpolate(text)  # asserts on a bare ${NAME}
    assert interpolate("${X:-a}/${Y:?set Y}") == "a/required-value"
    with pytest.raises(AssertionError):
        interpolate("${UNSET}")


def test_the_proxy_limits_slow_clients_and_request_rates() -> None:
    """In front of the broker's own limits: the proxy cuts off slow clients and limits each
    client address (the replicas see only the proxy's), answering 429 as a problem."""
    config = _nginx()
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert re.search(rf"^\s*{directive}\s+\d+s;", config, re.MULTILINE), directive
    zone = re.search(r"limit_req_zone\s+\$binary_remote_addr\s+zone=(\w+):", config)
    assert zone is not None
    location = re.search(r"location\s+/\s*\{(.*?)\}", config, re.DOTALL)
    assert location is not None
    assert re.search(rf"limit_req\s+zone={zone[1]}\b", location[1])
    assert re.search(r"limit_req_status\s+429;", config)
    refusal = re.search(r"location\s+@rate_limited\s*\{(.*?';)\s*\}", config, re.DOTALL)
    assert refusal is not None
    assert "application/problem+json" in refusal[1]
    assert "Retry-After" in refusal[1]
    body = re.search(r"return\s+429\s+'(.*)';", refusal[1])
    assert body is not None
    assert json.loads(body[1])["type"] == "urn:trm-broker:problem:rate-limited"
