"""The replicated deployments: the cluster nats-server configuration, compose's `cluster`
profile and the Kubernetes manifests, checked against their schemas, against what
nats-server accepts, and against what the code generates."""

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from shared.fabric.nats_server import binary
from shared.security.nats_auth import (
    Role,
    generate_password,
    password_env,
    render_authorization_from_env,
)
from tests.test_infra import COMPOSE_ACCOUNTS, ROOT

INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
NODES = ["nats-1", "nats-2", "nats-3"]
CLUSTER_URL = ",".join(f"nats://{node}:4222" for node in NODES)
HOT = ["dispatcher", "http-executor", "result-injector"]
# The chart's release, as infra/k8s/README.md installs it: its pods are <release>-<i>
# behind the headless Service <release>-headless.
RELEASE = "nats"
# Where the chart's nats.conf and the included authorization live; the runtime accounts
# file is on a volume of its own, beside.
CHART_CONFIG_DIR = "/etc/nats-config"
K8S_ACCOUNTS = "../nats-accounts/runtime-accounts.conf"
Doc = dict[str, Any]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def nats_check(config: Path) -> subprocess.CompletedProcess[str]:
    """nats-server's own test of a configuration (``-t``), every role's password set."""
    env = {"PATH": os.environ["PATH"]} | {password_env(r): generate_password() for r in Role}
    command = [binary(), "-c", str(config), "--name", NODES[0], "-t"]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


# --- infra/nats-cluster.conf -----------------------------------------------------------


def expanded(path: Path) -> str:
    """The configuration with its ``include "FILE"`` lines replaced by the files."""
    included = re.compile(r'^include "([^"]+)"\n', re.MULTILINE)
    return included.sub(lambda m: expanded(path.parent / m[1]), path.read_text())


def test_the_cluster_config_is_the_single_servers_with_the_generated_users() -> None:
    config = expanded(INFRA / "nats-cluster.conf")

    assert config.endswith(render_authorization_from_env(include=COMPOSE_ACCOUNTS))
    assert "sync_interval: always" in config


def test_each_node_routes_to_the_other_two() -> None:
    (routes,) = re.findall(r"routes: \[(.*)\]", (INFRA / "nats-cluster.conf").read_text())
    hosts = set(re.findall(r"nats://([^:,]+):6222", routes))
    services = load(ROOT / "compose.yaml")["services"]

    for node in NODES:
        assert services[node]["command"][-2:] == ["--name", node]
        # nats-server skips the route to itself.
        assert hosts - {node} == set(NODES) - {node}


def test_nats_server_accepts_the_cluster_config(tmp_path: Path) -> None:
    # As compose mounts them: both files in one folder, the accounts file beside.
    for name in ["nats-cluster.conf", "nats-server.conf"]:
        shutil.copy(INFRA / name, tmp_path)
    (tmp_path / COMPOSE_ACCOUNTS).parent.mkdir()
    (tmp_path / COMPOSE_ACCOUNTS).touch()

    checked = nats_check(tmp_path / "nats-cluster.conf")

    assert checked.returncode == 0, checked.stderr


# --- compose.yaml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, Doc]:
    services: dict[str, Doc] = load(ROOT / "compose.yaml")["services"]
    return services


def cluster(services: dict[str, Doc]) -> dict[str, Doc]:
    return {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}


def test_compose_yaml_is_valid_against_the_compose_spec() -> None:
    # Vendored: see tests/schemas/README.md.
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())

    errors = jsonschema.Draft7Validator(schema).iter_errors(load(ROOT / "compose.yaml"))

    assert [f"{e.json_path}: {e.message}" for e in errors] == []


def test_the_cluster_profile_runs_three_nodes_each_on_its_own_volume(
    services: dict[str, Doc],
) -> None:
    nodes = {n: s for n, s in cluster(services).items() if s["image"].startswith("nats:")}

    assert sorted(nodes) == NODES
    for name, node in nodes.items():
        assert "/etc/nats/nats-cluster.conf" in node["command"]
        assert f"{name}-data:/data" in node["volumes"]
        assert "healthcheck" in node


def test_the_cluster_profile_signs_in_through_every_node_with_three_replicas(
    services: dict[str, Doc],
) -> None:
    twins = {n: s for n, s in cluster(services).items() if s["image"] == "midcall:latest"}
    single = [n for n, s in services.items() if s["image"] == "midcall:latest" and n not in twins]

    # Each Midcall service of the single server's stack has its twin, signed in alike.
    assert set(twins) == {f"{name}-c" for name in single}
    for name, service in twins.items():
        environment = service["environment"]
        twin = services[name.removesuffix("-c")]["environment"]
        assert environment["MIDCALL_NATS_URL"] == CLUSTER_URL
        assert environment["MIDCALL_NATS_USER"] == twin["MIDCALL_NATS_USER"]
        if service["command"][0] in ("run", "setup"):
            assert environment["MIDCALL_STREAM_REPLICAS"] == "3"
    assert [twins[f"{name}-c"]["deploy"]["replicas"] for name in HOT] == [2, 2, 2]


def test_the_cluster_profile_needs_nothing_of_the_single_server_stack(
    services: dict[str, Doc],
) -> None:
    profile = cluster(services)

    assert services["postgres-c"]["image"].startswith("postgres:")
    for service in profile.values():
        assert set(service.get("depends_on", {})) <= set(profile)
    assert "postgres-c:5432" in profile["registry-c"]["environment"]["MIDCALL_DATABASE_URL"]


def test_the_default_deployment_keeps_its_single_server(services: dict[str, Doc]) -> None:
    default = {n: s for n, s in services.items() if "profiles" not in s}

    assert "nats" in default
    assert not set(NODES) & set(default)
    for service in default.values():
        environment = service.get("environment", {})
        assert environment.get("MIDCALL_NATS_URL", "nats://nats:4222") == "nats://nats:4222"
        assert "MIDCALL_STREAM_REPLICAS" not in environment
        assert "deploy" not in service


# --- infra/k8s -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: it renders infra/k8s (kubectl kustomize)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True
    )
    return list(yaml.safe_load_all(rendered.stdout))


def of_kind(manifests: list[Doc], kind: str) -> dict[str, Doc]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def containers(manifests: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """Each pod template's containers, with the workload they belong to."""
    for workload in manifests:
        if workload["kind"] in ("Deployment", "Job"):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                yield workload, container


def environment(container: Doc, manifests: list[Doc]) -> dict[str, str]:
    """A container's plain variables, those of the ConfigMaps it takes whole included."""
    maps = of_kind(manifests, "ConfigMap")
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values |= maps[source["configMapRef"]["name"]]["data"]
    return values | {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def secret_keys(node: Any) -> Iterator[tuple[str, str]]:
    """Every (Secret, key) that ``node`` refers to, however deep."""
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]
        for value in node.values():
            yield from secret_keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from secret_keys(value)


def test_every_manifest_is_valid_for_kubernetes(manifests: list[Doc]) -> None:
    example = load(K8S / "secret.example.yaml")

    for manifest in [*manifests, example]:
        # Strict: a field Kubernetes does not know is an error, not ignored.
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_every_container_is_probed_over_http(manifests: list[Doc]) -> None:
    for workload, container in containers(manifests):
        if workload["kind"] == "Job":
            continue  # setup exits; activeDeadlineSeconds bounds it
        hot = workload["metadata"]["name"] in HOT
        ports = {port["name"] for port in container["ports"]}
        # A hot service is ready while it takes work from NATS, alive while it answers.
        paths = {"readinessProbe": "/healthz", "livenessProbe": "/metrics" if hot else "/healthz"}
        for probe, path in paths.items():
            check = container[probe]["httpGet"]
            assert check["path"] == path
            assert check["port"] in ports


def test_every_pod_runs_unprivileged_within_limits(manifests: list[Doc]) -> None:
    for workload, container in containers(manifests):
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
        assert container["securityContext"]["readOnlyRootFilesystem"]
        assert not container["securityContext"]["allowPrivilegeEscalation"]
        assert set(container["resources"]) == {"requests", "limits"}


def test_every_secret_reference_names_a_key_of_the_example_secret(
    manifests: list[Doc],
) -> None:
    example = load(K8S / "secret.example.yaml")
    defined = {(example["metadata"]["name"], key) for key in example["stringData"]}

    referred = set(secret_keys(manifests)) | set(secret_keys(load(K8S / "nats-values.yaml")))

    assert referred <= defined
    assert {("midcall", password_env(role)) for role in Role} <= referred


def test_the_hot_services_run_twice_and_keep_one_through_disruptions(
    manifests: list[Doc],
) -> None:
    deployments = of_kind(manifests, "Deployment")
    budgets = of_kind(manifests, "PodDisruptionBudget")

    covered = set()
    for budget in budgets.values():
        assert budget["spec"]["minAvailable"] == 1
        wanted = budget["spec"]["selector"]["matchLabels"].items()
        covered |= {
            name
            for name, d in deployments.items()
            if wanted <= d["spec"]["template"]["metadata"]["labels"].items()
        }
    assert sorted(covered) == HOT
    assert [deployments[name]["spec"]["replicas"] for name in HOT] == [2, 2, 2]


def test_setup_makes_every_stream_with_three_replicas(manifests: list[Doc]) -> None:
    (job,) = of_kind(manifests, "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]

    assert container["args"] == ["setup"]
    assert environment(container, manifests)["MIDCALL_STREAM_REPLICAS"] == "3"
    assert environment(container, manifests)["MIDCALL_NATS_USER"] == "setup"


def test_every_service_reaches_the_three_nats_pods_of_the_chart(manifests: list[Doc]) -> None:
    replicas = load(K8S / "nats-values.yaml")["config"]["cluster"]["replicas"]
    pods = [f"nats://{RELEASE}-{i}.{RELEASE}-headless:4222" for i in range(replicas)]

    for _, container in containers(manifests):
        assert environment(container, manifests)["MIDCALL_NATS_URL"].split(",") == pods


# --- infra/k8s/nats-values.yaml --------------------------------------------------------


def test_the_chart_runs_a_synced_jetstream_cluster_of_three() -> None:
    config = load(K8S / "nats-values.yaml")["config"]

    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"]
    assert config["jetstream"]["merge"] == {"sync_interval": "always"}


def test_the_chart_includes_the_generated_authorization() -> None:
    values = load(K8S / "nats-values.yaml")
    authorization = values["configMap"]["merge"]["data"]["midcall-authorization.conf"]

    # Regenerate with: midcall nats-config --runtime-accounts ../nats-accounts/runtime-accounts.conf
    assert authorization == render_authorization_from_env(include=K8S_ACCOUNTS)
    assert values["config"]["merge"]["00$include"] == "midcall-authorization.conf"
    assert set(values["container"]["env"]) == {password_env(role) for role in Role}


def test_the_sidecar_writes_the_accounts_file_nats_server_includes(
    manifests: list[Doc],
) -> None:
    values = load(K8S / "nats-values.yaml")
    (mount,) = [p["value"] for p in values["container"]["patch"]]
    patches = values["podTemplate"]["patch"]
    (sidecar,) = [p["value"] for p in patches if p["path"] == "/spec/containers/-"]

    included = os.path.normpath(f"{CHART_CONFIG_DIR}/{K8S_ACCOUNTS}")
    assert sidecar["args"] == ["runtime-accounts", included]
    assert Path(included).parent == Path(mount["mountPath"])
    assert sidecar["volumeMounts"] == [mount]
    # Helm does not see kustomize's image: both name the same.
    assert {container["image"] for _, container in containers(manifests)} == {sidecar["image"]}


def test_nats_server_accepts_the_charts_authorization(tmp_path: Path) -> None:
    # The chart's layout: its config folder, the accounts volume beside it.
    values = load(K8S / "nats-values.yaml")
    config = tmp_path / "nats-config"
    config.mkdir()
    for name, text in values["configMap"]["merge"]["data"].items():
        (config / name).write_text(text)
    (config / "nats.conf").write_text("include midcall-authorization.conf\n")
    (config / K8S_ACCOUNTS).parent.mkdir()
    (config / K8S_ACCOUNTS).touch()

    checked = nats_check(config / "nats.conf")

    assert checked.returncode == 0, checked.stderr
