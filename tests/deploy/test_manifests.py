"""deploy/k8s and deploy/helm: every Kubernetes manifest passes kubernetes-validate's bundled
schemas in strict mode (unknown fields are errors), and what the objects say matches Crossway:
the ConfigMap's crossway.yaml is deploy/crossway.yaml and loads with the environment the
Deployment gives it, the probes hit the admin plane's /healthz and /readyz on the ports the
config binds, the Secret references resolve, the Service and PodDisruptionBudget select the
pods. No helm binary can be had here (none on PyPI for Python 3.11, npm or Debian), so the
chart is checked statically: its values, includes and block structure, and its objects' kinds
against deploy/k8s."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from crossway import __version__
from crossway.config import ConfigError, load_config, parse_config
from tests.helpers import ROOT

K8S = ROOT / "deploy" / "k8s"
CHART = ROOT / "deploy" / "helm" / "crossway"
CONTAINER_CONFIG = ROOT / "deploy" / "crossway.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# The oldest and the newest Kubernetes minor versions the manifests are meant for; both are
# shipped by the pinned kubernetes-validate.
K8S_VERSIONS = ("1.30.0", "1.37.0")
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
GATEWAY = {"app.kubernetes.io/name": "crossway", "app.kubernetes.io/component": "gateway"}
CONFIG_ENV = {
    "CROSSWAY_ADMIN_TOKEN": "test-admin-token-0123456789",
    "REDIS_URL": "redis://redis:6379/0",
    "OPENAI_BASE_URL": "http://upstream:9101/v1",
}
"""What the container config needs from the environment (the manifests give the same)."""
REQUIRED_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")  # `${VAR}` without a `:-default`


def documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of deploy/k8s by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{path.name}: {key} defined twice"
            found[key] = doc
    return found


def gateway_container() -> dict[str, Any]:
    (container,) = objects()[("Deployment", "crossway")]["spec"]["template"]["spec"]["containers"]
    return container


def container_env() -> dict[str, Any]:
    """The gateway container's environment: its `env` entries (values or valueFrom) over the
    keys of the ConfigMaps it takes with envFrom."""
    env: dict[str, Any] = {}
    for source in gateway_container().get("envFrom", []):
        config_map = objects()[("ConfigMap", source["configMapRef"]["name"])]
        env.update(config_map["data"])
    for entry in gateway_container()["env"]:
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def dockerfile_uid() -> int:
    match = re.search(r"^ARG CROSSWAY_UID=(\d+)$", DOCKERFILE.read_text(), re.M)
    assert match, "deploy/Dockerfile sets ARG CROSSWAY_UID"
    return int(match.group(1))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        # Raises for a schema violation, an unknown field, or a kind/apiVersion it has no
        # schema for (which the command-line tool would only warn about).
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = objects()[("Deployment", "crossway")]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    (kustomization,) = documents(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == objects()[("Namespace", "crossway")]["metadata"]["name"]
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {p.name for p in MANIFESTS} - {"secret.example.yaml"}
    assert set(listed) == expected
    # The image the Deployment names is the one the kustomization retags.
    assert {i["name"] for i in kustomization["images"]} == {
        gateway_container()["image"].split(":")[0]
    }


def test_configmap_is_the_container_config_and_loads_with_the_pod_environment() -> None:
    text = objects()[("ConfigMap", "crossway-config")]["data"]["crossway.yaml"]
    assert text == CONTAINER_CONFIG.read_text(encoding="utf-8")
    env = container_env()
    # Every `${VAR}` the file needs without a default is given to the pod.
    for name in REQUIRED_VAR.findall(text):
        if name != "OTEL_EXPORTER_OTLP_ENDPOINT":  # empty value: no tracing
            assert name in env, f"the Deployment does not set {name}, which crossway.yaml needs"
    # Secrets stand in for their secretKeyRef; plain values come from the manifests.
    values = {k: v if isinstance(v, str) else "from-a-secret-0123456789" for k, v in env.items()}
    config = parse_config(text, "deploy/k8s/configmap.yaml", values)
    assert config.admin.token is not None
    assert config.admin.host == config.listen.host == "0.0.0.0"
    assert config.accounting.store.type == "redis"


def test_config_without_the_secret_is_refused() -> None:
    """No admin token, no Redis URL, no upstream: the file names each problem (fail closed)."""
    with pytest.raises(ConfigError) as info:
        load_config(CONTAINER_CONFIG, {})
    text = str(info.value)
    for problem in ("CROSSWAY_ADMIN_TOKEN", "REDIS_URL", "OPENAI_BASE_URL"):
        assert problem in text


def test_crossway_validate_accepts_the_container_config_with_its_environment() -> None:
    command = [sys.executable, "-m", "crossway", "validate", "--config", str(CONTAINER_CONFIG)]
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    ok = subprocess.run(command, env={**base, **CONFIG_ENV}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"{CONTAINER_CONFIG}: ok (1 routes, 1 backends)"
    refused = subprocess.run(command, env=base, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "environment variable CROSSWAY_ADMIN_TOKEN is not set" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_probes_and_ports_match_the_config() -> None:
    config = load_config(CONTAINER_CONFIG, CONFIG_ENV)
    container = gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.listen.port, "admin": config.admin.port}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
    assert probes == {
        "startupProbe": {"path": "/healthz", "port": "admin"},
        "livenessProbe": {"path": "/healthz", "port": "admin"},
        "readinessProbe": {"path": "/readyz", "port": "admin"},
    }
    pod = objects()[("Deployment", "crossway")]["spec"]["template"]["spec"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > config.listen.drain_seconds + pre_stop


def test_deployment_runs_locked_down_with_writable_data_and_tmp() -> None:
    deployment = objects()[("Deployment", "crossway")]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    container = gateway_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "memory" in container["resources"]["limits"]
    assert "cpu" in container["resources"]["requests"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    env = container_env()
    assert "emptyDir" in mounts[env["CROSSWAY_DATA_DIR"]]
    assert "emptyDir" in mounts["/tmp"]  # the metrics of several workers live in a temp dir
    config_dir = str(Path(env["CROSSWAY_CONFIG"]).parent)
    assert mounts[config_dir]["configMap"]["name"] == "crossway-config"
    assert Path(env["CROSSWAY_CONFIG"]).name == "crossway.yaml"


def test_secret_references_resolve_to_the_example_secret() -> None:
    secret = objects()[("Secret", "crossway")]
    keys = set(secret["stringData"])
    refs = [e["valueFrom"]["secretKeyRef"] for e in gateway_container()["env"] if "valueFrom" in e]
    assert {r["name"] for r in refs} == {"crossway"}
    assert {r["key"] for r in refs} <= keys
    required = {r["key"] for r in refs if not r.get("optional")}
    assert required == {"admin-token"}
    admin = next(e for e in gateway_container()["env"] if e["name"] == "CROSSWAY_ADMIN_TOKEN")
    assert admin["valueFrom"]["secretKeyRef"]["key"] == "admin-token"
    # The example holds placeholders only, and is never applied by the kustomization.
    assert all(v.startswith("REPLACE-") for v in secret["stringData"].values())


def test_service_pdb_and_network_policy_select_the_gateway() -> None:
    objs = objects()
    pod_labels = objs[("Deployment", "crossway")]["spec"]["template"]["metadata"]["labels"]
    assert objs[("Deployment", "crossway")]["spec"]["selector"]["matchLabels"] == GATEWAY
    assert GATEWAY.items() <= pod_labels.items()
    service = objs[("Service", "crossway")]["spec"]
    assert service["selector"] == GATEWAY
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["ports"]} == {
        ("http", 8080, "http"),
        ("admin", 15000, "admin"),
    }
    pdb = objs[("PodDisruptionBudget", "crossway")]["spec"]
    assert pdb["selector"]["matchLabels"] == GATEWAY
    assert pdb["minAvailable"] == 1
    policy = objs[("NetworkPolicy", "crossway-redis")]["spec"]
    assert policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == GATEWAY


def test_redis_url_names_the_redis_service() -> None:
    objs = objects()
    url = container_env()["REDIS_URL"]
    match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", url)
    assert match, url
    service = objs[("Service", match.group(1))]["spec"]
    assert int(match.group(2)) in {p["port"] for p in service["ports"]}
    redis_pods = objs[("Deployment", match.group(1))]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= redis_pods.items()


# The Helm chart, statically (no helm binary here).

VALUES_REF = re.compile(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
INCLUDE = re.compile(r'(?:include|template)\s+"([^"]+)"')
DEFINE = re.compile(r'define\s+"([^"]+)"')
ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
OPENERS = ("if ", "with ", "range ", "define ", "block ")


def chart_templates() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in (CHART / "templates").iterdir()}


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "crossway"
    assert chart["type"] == "application"
    assert chart["appVersion"] == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])


def test_chart_templates_use_only_values_that_exist() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    used: set[str] = set()
    for name, text in chart_templates().items():
        for match in VALUES_REF.finditer(text):
            path = match.group(1).lstrip(".").split(".")
            node: Any = values
            for i, part in enumerate(path):
                assert isinstance(node, dict) and part in node, (
                    f"templates/{name}: .Values.{'.'.join(path)} is not in values.yaml "
                    f"(no {'.'.join(path[: i + 1])})"
                )
                node = node[part]
            used.add(path[0])
    assert used == set(values), f"values.yaml keys no template reads: {set(values) - used}"


def test_chart_includes_are_defined_and_blocks_are_closed() -> None:
    templates = chart_templates()
    defined = {d for text in templates.values() for d in DEFINE.findall(text)}
    for name, text in templates.items():
        for used in INCLUDE.findall(text):
            assert used in defined, f"templates/{name} includes undefined {used!r}"
        depth = 0
        for action in ACTION.findall(text):
            if action.startswith("/*"):
                continue
            if action.startswith(OPENERS):
                depth += 1
            elif action == "end":
                depth -= 1
                assert depth >= 0, f"templates/{name}: an `end` closes nothing"
        assert depth == 0, f"templates/{name}: {depth} block(s) left open"


def test_chart_ships_the_container_config_and_the_same_objects() -> None:
    assert (CHART / "files" / "crossway.yaml").read_text() == CONTAINER_CONFIG.read_text()
    kinds: set[tuple[str, str]] = set()
    for text in chart_templates().values():
        api_versions = re.findall(r"^apiVersion: (\S+)$", text, re.M)
        names = re.findall(r"^kind: (\S+)$", text, re.M)
        assert len(api_versions) == len(names)
        kinds.update(zip(api_versions, names, strict=True))
    plain = {(doc["apiVersion"], doc["kind"]) for doc in objects().values()}
    # Helm installs into the release's namespace (--create-namespace), so no Namespace object.
    assert kinds == plain - {("v1", "Namespace")}
    deployment = chart_templates()["deployment.yaml"]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        assert re.search(rf"{probe}:\n\s+httpGet:\n\s+path: {path}\n\s+port: admin", deployment)
    assert "secretKeyRef" in deployment
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["replicaCount"] == 2
    assert values["podSecurityContext"]["runAsUser"] == dockerfile_uid()
    assert values["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_docs_examples_validate_and_name_real_files() -> None:
    """docs/deploy.md: its Kubernetes YAML examples (the Ingress) pass the same strict schemas
    and point at the Service's named port; every deploy/ path it names exists."""
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    examples = [
        doc
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
        for doc in yaml.safe_load_all(block)
        if isinstance(doc, dict) and "apiVersion" in doc
    ]
    assert [doc["kind"] for doc in examples] == ["Ingress"]
    ports = {p["name"] for p in objects()[("Service", "crossway")]["spec"]["ports"]}
    for doc in examples:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        for rule in doc["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "crossway"
                assert path["backend"]["service"]["port"]["name"] in ports
    for named in set(re.findall(r"`(deploy/[\w./-]+)`", text)):
        assert (ROOT / named).exists(), f"docs/deploy.md names missing {named}"
