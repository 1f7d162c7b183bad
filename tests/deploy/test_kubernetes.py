"""deploy/kubernetes: read and cross-checked: selectors select, references resolve, probes
reach ports and paths the apps serve, settings and commands are the package's, pods run
unprivileged, and the node's NetworkPolicy lets it reach the broker (and DNS) only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.manifests import (
    KUBERNETES,
    REQUIRED,
    cli_problem,
    effective_settings,
    load_yaml,
    load_yaml_documents,
    port_of,
    project_version,
    role_of,
    serves,
)

Object = Mapping[str, Any]
WORKLOADS = ("Deployment", "Job")


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    document = load_yaml(KUBERNETES / "kustomization.yaml")
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> list[Object]:
    found: list[Object] = []
    for resource in kustomization["resources"]:
        found += load_yaml_documents(KUBERNETES / resource)
    return found


def _of_kind(objects: list[Object], kind: str) -> dict[str, Object]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod_spec(workload: Object) -> Object:
    spec: Object = workload["spec"]["template"]["spec"]
    return spec


def _pod_labels(workload: Object) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _containers(objects: list[Object]) -> list[tuple[Object, Object]]:
    """(workload, container) for every container of every Deployment and Job."""
    return [
        (workload, container)
        for kind in WORKLOADS
        for workload in _of_kind(objects, kind).values()
        for container in _pod_spec(workload)["containers"]
    ]


def _role(container: Object) -> str:
    return role_of(container["args"])


def _workloads_of_role(objects: list[Object], role: str) -> list[tuple[Object, Object]]:
    return [(w, c) for w, c in _containers(objects) if _role(c) == role]


def _environment(objects: list[Object], container: Object) -> dict[str, str]:
    """The container's TRM_ environment: its ConfigMaps (envFrom), then its env; values
    from Secrets are not in the repository and stand in as a placeholder."""
    config_maps = _of_kind(objects, "ConfigMap")
    environment: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        environment |= config_maps[source["configMapRef"]["name"]]["data"]
    for variable in container.get("env") or []:
        environment[variable["name"]] = variable.get("value", REQUIRED)
    if "TRM_DATABASE_URL" in environment and environment["TRM_DATABASE_URL"] == REQUIRED:
        environment["TRM_DATABASE_URL"] = "postgresql+asyncpg://trm@postgres/trm"
    return environment


def _generated_secrets(kustomization: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Secret name: {"files": keys, "envs": ...}: which keys each generated Secret has (file
    keys are known; an env file's are its variables, not in the repository)."""
    secrets: dict[str, dict[str, str]] = {}
    for generator in kustomization.get("secretGenerator") or []:
        keys = {item.split("=", 1)[0]: "file" for item in generator.get("files") or []}
        if generator.get("envs"):
            keys["*"] = "env"
        secrets[generator["name"]] = keys
    return secrets


def test_every_manifest_file_is_a_kustomization_resource(kustomization: dict[str, Any]) -> None:
    listed = set(kustomization["resources"])
    present = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for generator in kustomization.get("secretGenerator") or []:
        for item in [*generator.get("files", []), *generator.get("envs", [])]:
            path = PurePosixPath(item.split("=", 1)[-1])
            assert path.parts[0] == "secrets", "secret files stay in the ignored secrets/"
    assert (KUBERNETES / "secrets" / ".gitignore").read_text().split()[0] == "*"


def test_it_has_each_part(objects: list[Object]) -> None:
    deployments = _of_kind(objects, "Deployment").values()
    roles = {_role(c) for d in deployments for c in _pod_spec(d)["containers"]}
    assert roles == {"broker", "worker", "node"}
    (job,) = _of_kind(objects, "Job").values()
    assert [_role(c) for c in _pod_spec(job)["containers"]] == ["migrate"]
    assert _pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    for kind in ("Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"):
        assert _of_kind(objects, kind), kind


def test_commands_are_trm_broker_commands_and_the_image_is_this_version(
    objects: list[Object],
) -> None:
    images = set()
    for _, container in _containers(objects):
        assert "command" not in container, "the image's entrypoint (trm-broker) runs"
        assert cli_problem(container["args"]) is None, cli_problem(container["args"])
        images.add(container["image"])
    assert len(images) == 1, "one image for every role"
    (image,) = images
    assert image.rsplit(":", 1)[1] == project_version(), image


def test_deployment_selectors_match_their_pods(objects: list[Object]) -> None:
    for name, deployment in _of_kind(objects, "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _selects(selector, _pod_labels(deployment)), name


def test_each_service_selects_one_deployment_and_targets_a_port_it_exposes(
    objects: list[Object],
) -> None:
    deployments = _of_kind(objects, "Deployment")
    for name, service in _of_kind(objects, "Service").items():
        selector = service["spec"]["selector"]
        selected = [d for d in deployments.values() if _selects(selector, _pod_labels(d))]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} Deployments"
        container_ports = [
            port for c in _pod_spec(selected[0])["containers"] for port in c.get("ports", [])
        ]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(target in (p.get("name"), p["containerPort"]) for p in container_ports), (
                name,
                target,
            )


def test_config_maps_and_secrets_referenced_exist(
    objects: list[Object], kustomization: dict[str, Any]
) -> None:
    config_maps = _of_kind(objects, "ConfigMap")
    secrets = _generated_secrets(kustomization)
    for workload, container in _containers(objects):
        for source in container.get("envFrom") or []:
            assert source["configMapRef"]["name"] in config_maps
        for variable in container.get("env") or []:
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference is None:
                continue
            keys = secrets[reference["name"]]
            if reference["key"] not in keys:
                # an env file's keys are its variables: the one this reference sets
                assert "*" in keys, reference
                assert reference["key"] == variable["name"], reference
        for volume in _pod_spec(workload).get("volumes") or []:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, volume
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, volume
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in _of_kind(objects, "PersistentVolumeClaim"), claim


def test_every_environment_is_valid_settings(objects: list[Object]) -> None:
    for _, container in _containers(objects):
        effective_settings(_environment(objects, container))  # raises on a bad name or value
    for config_map in _of_kind(objects, "ConfigMap").values():
        effective_settings(config_map["data"])


def test_container_ports_are_the_roles_ports(objects: list[Object]) -> None:
    for workload, container in _containers(objects):
        role = _role(container)
        ports = [port["containerPort"] for port in container.get("ports", [])]
        if role == "migrate":
            assert not ports
            continue
        assert ports == [port_of(role, _environment(objects, container))], workload["metadata"]


def test_probes_reach_a_declared_port_and_a_path_the_role_serves(objects: list[Object]) -> None:
    expected = {
        "broker": ("/readyz", "/healthz"),
        "worker": ("/readyz", "/healthz"),
        "node": ("/healthz", "/healthz"),  # the node has no /readyz
    }
    for _, container in _containers(objects):
        role = _role(container)
        if role == "migrate":
            continue
        names = {p.get("name"): p["containerPort"] for p in container["ports"]}
        for kind, path in zip(("readinessProbe", "livenessProbe"), expected[role], strict=True):
            probe = container[kind]["httpGet"]
            assert probe["path"] == path, (role, kind)
            assert serves(role, probe["path"]), (role, probe["path"])
            assert probe["port"] in (*names, *names.values()), (role, kind)
        assert serves(role, "/healthz")


def test_pods_run_unprivileged_with_resource_requests(objects: list[Object]) -> None:
    for workload, container in _containers(objects):
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        requests = container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), name
        assert "memory" in container["resources"]["limits"], name


def test_files_the_containers_need_are_mounted(
    objects: list[Object], kustomization: dict[str, Any]
) -> None:
    secrets = _generated_secrets(kustomization)
    for workload, container in _containers(objects):
        settings = effective_settings(_environment(objects, container))
        volumes = {volume["name"]: volume for volume in _pod_spec(workload).get("volumes") or []}
        mounts = {
            PurePosixPath(mount["mountPath"]): (volumes[mount["name"]], mount)
            for mount in container.get("volumeMounts") or []
        }
        role = _role(container)
        key_files = {
            "broker": [settings.broker_key_file],
            "worker": [settings.broker_key_file],
            "node": settings.node_key_files,
        }
        for path in key_files.get(role, []):
            pure = PurePosixPath(path)
            volume, _ = mounts[pure.parent]
            assert pure.name in secrets[volume["secret"]["secretName"]], (role, pure)
        if role == "node":
            database = PurePosixPath(settings.node_database_url.split(":///", 1)[1])
            volume, mount = mounts[database.parent]
            assert "persistentVolumeClaim" in volume, "the node's database outlives the pod"
            assert not mount.get("readOnly", False)


def test_the_disruption_budget_keeps_a_broker_serving(objects: list[Object]) -> None:
    (budget,) = _of_kind(objects, "PodDisruptionBudget").values()
    selector = budget["spec"]["selector"]["matchLabels"]
    (selected,) = [
        d for d in _of_kind(objects, "Deployment").values() if _selects(selector, _pod_labels(d))
    ]
    assert _role(_pod_spec(selected)["containers"][0]) == "broker"
    assert 1 <= budget["spec"]["minAvailable"] < selected["spec"]["replicas"]


def test_brokers_leave_delivery_to_the_workers_and_nodes_address_the_public_url(
    objects: list[Object],
) -> None:
    ((_, broker),) = _workloads_of_role(objects, "broker")
    broker_settings = effective_settings(_environment(objects, broker))
    assert broker_settings.run_dispatcher is False
    assert _workloads_of_role(objects, "worker")
    public = broker_settings.public_url
    assert public is not None
    for _, node in _workloads_of_role(objects, "node"):
        assert effective_settings(_environment(objects, node)).node_broker_url == public
    # The public URL names the broker's Service and port (nodes reach it in the cluster).
    parts = urlsplit(public)
    service = _of_kind(objects, "Service")[str(parts.hostname)]
    assert parts.port in [port["port"] for port in service["spec"]["ports"]]
    deployments = _of_kind(objects, "Deployment").values()
    (selected,) = [d for d in deployments if _selects(service["spec"]["selector"], _pod_labels(d))]
    assert _role(_pod_spec(selected)["containers"][0]) == "broker"


def test_nodes_may_reach_the_broker_and_dns_only(objects: list[Object]) -> None:
    (policy,) = _of_kind(objects, "NetworkPolicy").values()
    spec = policy["spec"]
    deployments = _of_kind(objects, "Deployment").values()
    selected = [
        d for d in deployments if _selects(spec["podSelector"]["matchLabels"], _pod_labels(d))
    ]
    assert [_role(_pod_spec(d)["containers"][0]) for d in selected] == ["node"]
    assert "Egress" in spec["policyTypes"]
    ((broker_deployment, broker),) = _workloads_of_role(objects, "broker")
    broker_port = broker["ports"][0]["containerPort"]
    reaches_broker = reaches_dns = False
    for rule in spec["egress"]:
        assert rule.get("to"), "a rule without `to` would allow every destination"
        ports = {(port.get("protocol", "TCP"), port["port"]) for port in rule["ports"]}
        for peer in rule["to"]:
            assert "ipBlock" not in peer
            if "namespaceSelector" in peer:
                assert peer["namespaceSelector"]["matchLabels"] == {
                    "kubernetes.io/metadata.name": "kube-system"
                }
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                assert ports <= {("UDP", 53), ("TCP", 53)}
                reaches_dns = True
            else:
                labels = peer["podSelector"]["matchLabels"]
                assert _selects(labels, _pod_labels(broker_deployment)), labels
                assert all(
                    not _selects(labels, _pod_labels(d))
                    for d in deployments
                    if d is not broker_deployment
                ), "the peer selects the broker's pods alone"
                assert ports == {("TCP", broker_port)}
                reaches_broker = True
    assert reaches_broker
    assert reaches_dns
