"""deploy/k8s: every manifest is valid Kubernetes, and the parts agree with each other and the engine.

Schemas come from the ``kubernetes-validate`` package (strict: unknown fields are errors). The overlay
is rendered by tests/deploy/kustomize.py and, where a kustomize binary exists, compared with it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from engine.config import read_config_file
from tests.deploy import kustomize
from tests.deploy.conftest import K8S, KUSTOMIZATIONS, ROOT

K8S_VERSION = "1.32"  # gRPC probes, native sidecars and unhealthyPodEvictionPolicy are all GA or beta-on
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus Operator: no schema in kubernetes-validate
SUPERVISOR_MARGIN_S = 5  # engine/supervisor.py waits drain delay + grace + 5 s before killing workers
METRICS = {
    "engine_requests_total",
    "engine_request_duration_seconds",
    "engine_node_duration_seconds",
    "engine_node_errors_total",
    "engine_in_flight_requests",
    "engine_thread_pool_queue_depth",
    "engine_thread_pool_runs_terminated_total",
    "engine_graph_ready",
    "engine_graph_load_failures_total",
    "engine_request_log_records_total",
    "engine_request_log_truncated_records_total",
    "engine_feature_values_total",
    "engine_shadow_requests_total",
    "engine_shadow_rows_total",
    "engine_shadow_rows_agree_total",
    "engine_contract_violations_total",
    "engine_drift_psi",
    "engine_drift_rows",
    "engine_drift_nan_share",
    "engine_drift_out_of_range_share",
    "engine_quality",
    "engine_quality_labelled",
}


def _one(manifests: list[kustomize.Manifest], kind: str, name: str = "graph-engine") -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def _engine(manifests: list[kustomize.Manifest]) -> dict[str, Any]:
    pod = _one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "engine"]
    return container


def _engine_yaml(manifests: list[kustomize.Manifest]) -> dict[str, Any]:
    pod = _one(manifests, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    config_map = _one(manifests, "ConfigMap", volume["configMap"]["name"])
    return yaml.safe_load(config_map["data"]["engine.yaml"])


# --- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_manifest_validates_against_the_kubernetes_schema(
    rendered: dict[str, list[kustomize.Manifest]], name: str
) -> None:
    assert rendered[name]
    for manifest in rendered[name]:
        if manifest["kind"] in CRD_KINDS:
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_configmap_graphs_example_patches_the_base_into_a_valid_deployment() -> None:
    example = K8S / "examples" / "graphs-from-configmap.yaml"
    deployment = _one(kustomize.build(K8S / "base"), "Deployment")
    kustomize._strategic_merge(deployment, yaml.safe_load(example.read_text()))
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    mounts = {m["mountPath"] for m in _engine([deployment])["volumeMounts"]}
    assert "/graphs" in mounts


def test_every_yaml_file_under_deploy_is_used_somewhere() -> None:
    used = {
        K8S / "examples" / "prometheus-adapter-values.yaml",
        K8S / "examples" / "graphs-from-configmap.yaml",
    }
    for name in KUSTOMIZATIONS:
        folder = K8S / name
        spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
        used.add(folder / "kustomization.yaml")
        used |= {folder / r for r in spec.get("resources", []) if (folder / r).is_file()}
        used |= {folder / p["path"] for p in spec.get("patches", []) if "path" in p}
        used |= {
            folder / f.rpartition("=")[2] for g in spec.get("configMapGenerator", []) for f in g["files"]
        }
    assert set(K8S.rglob("*.yaml")) == used


@pytest.mark.skipif(
    not (shutil.which("kustomize") or shutil.which("kubectl")), reason="no kustomize or kubectl binary"
)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_our_renderer_matches_kustomize(rendered: dict[str, list[kustomize.Manifest]], name: str) -> None:
    command = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]
    output = subprocess.run([*command, str(K8S / name)], capture_output=True, text=True, check=True).stdout

    def keyed(manifests: list[kustomize.Manifest]) -> dict[tuple[str, str], Any]:
        return {(m["kind"], m["metadata"]["name"]): _unordered(m) for m in manifests}

    assert keyed(rendered[name]) == keyed([m for m in yaml.safe_load_all(output) if m])


def _unordered(node: Any, key: str = "") -> Any:
    """Lists merged by key (volumes, mounts, env, containers) compare as sets: order is not meaning."""
    if isinstance(node, dict):
        return {k: _unordered(v, k) for k, v in node.items()}
    if isinstance(node, list):
        items = [_unordered(v) for v in node]
        if key in kustomize.MERGE_KEYS and all(kustomize.MERGE_KEYS[key] in item for item in items):
            items.sort(key=lambda item: str(item[kustomize.MERGE_KEYS[key]]))
        return items
    return node


# --- the engine container -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base", "overlays/example"])
def test_probes_are_grpc_health_on_the_grpc_container_port(
    rendered: dict[str, list[kustomize.Manifest]], name: str
) -> None:
    engine = _engine(rendered[name])
    ports = {p["name"]: p["containerPort"] for p in engine["ports"]}
    assert ports == {"grpc": 8001, "http": 8000, "metrics": 8002}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(engine[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"grpc"}
        assert engine[probe]["grpc"] == {"port": ports["grpc"], "service": ""}, probe


@pytest.mark.parametrize("name", ["base", "overlays/example"])
def test_termination_grace_exceeds_drain_delay_plus_grace(
    rendered: dict[str, list[kustomize.Manifest]], name: str
) -> None:
    settings = _engine_yaml(rendered[name])
    env = {e["name"]: e.get("value") for e in _engine(rendered[name]).get("env", [])}
    drain = float(env.get("ENGINE_DRAIN_DELAY_S") or settings.get("drain_delay_s", 0))
    grace = float(env.get("ENGINE_GRACE_S") or settings.get("grace_s", 10))
    assert drain > 0, "a drain delay lets endpoints and clients drop the pod before it refuses calls"
    pod = _one(rendered[name], "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > drain + grace + SUPERVISOR_MARGIN_S


@pytest.mark.parametrize("name", ["base", "overlays/example"])
def test_workers_equal_the_whole_cpu_limit(rendered: dict[str, list[kustomize.Manifest]], name: str) -> None:
    engine = _engine(rendered[name])
    (workers,) = [e for e in engine["env"] if e["name"] == "ENGINE_WORKERS"]
    assert workers["valueFrom"]["resourceFieldRef"] == {
        "containerName": "engine",
        "resource": "limits.cpu",
        "divisor": "1",
    }
    assert not any(a.startswith("--workers") for a in engine.get("args", []))
    limits, requests = engine["resources"]["limits"], engine["resources"]["requests"]
    assert re.fullmatch(r"[1-9]\d*", str(limits["cpu"])), "whole cores: one worker per core"
    assert requests == limits, "Guaranteed QoS"


def test_the_overlay_changes_cores_and_workers_follow(rendered: dict[str, list[kustomize.Manifest]]) -> None:
    base, overlay = _engine(rendered["base"]), _engine(rendered["overlays/example"])
    assert base["resources"]["limits"]["cpu"] != overlay["resources"]["limits"]["cpu"]
    assert base["env"] == overlay["env"]


def test_the_engine_runs_the_images_command(rendered: dict[str, list[kustomize.Manifest]]) -> None:
    for name in ("base", "overlays/example"):
        engine = _engine(rendered[name])
        assert "command" not in engine  # ENTRYPOINT ["engine", "serve"] stays
        assert len(engine.get("args", ["/graphs"])) == 1  # CMD: only the graphs folder may change
        assert engine["securityContext"]["readOnlyRootFilesystem"] is True
    pod = _one(rendered["overlays/example"], "Deployment")["spec"]["template"]["spec"]
    images = {c["name"]: c["image"] for c in pod["containers"]}
    assert images["engine"] == "registry.example.com/ml/graph-engine:0.1.0"


@pytest.mark.parametrize(
    "path", [K8S / "base" / "engine.yaml", K8S / "overlays/example/engine.yaml", ROOT / "deploy/engine.yaml"]
)
def test_engine_yaml_keys_are_settings(path: Path) -> None:
    # The server's own reader: unknown keys and wrong types fail as they would at start-up.
    assert read_config_file(path)


# --- services, autoscaling, disruption, monitoring ----------------------------------------------


def test_services_select_the_pods_and_name_real_ports(rendered: dict[str, list[kustomize.Manifest]]) -> None:
    manifests = rendered["overlays/example"]
    labels = _one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in _engine(manifests)["ports"]}
    for name in ("graph-engine", "graph-engine-headless"):
        service = _one(manifests, "Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert _one(manifests, "Service", "graph-engine-headless")["spec"]["clusterIP"] == "None"
    pdb = _one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor = _one(manifests, "ServiceMonitor")
    service = _one(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_hpa_scales_on_cpu_and_on_the_adapters_in_flight_metric(
    rendered: dict[str, list[kustomize.Manifest]],
) -> None:
    base = _one(rendered["base"], "HorizontalPodAutoscaler")
    assert [m["type"] for m in base["spec"]["metrics"]] == ["Resource"]
    hpa = _one(rendered["overlays/example"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "graph-engine",
    }
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    adapter = yaml.safe_load((K8S / "examples" / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert pods["metric"]["name"] in served
    pdb = _one(rendered["overlays/example"], "PodDisruptionBudget")
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]


def _metric_names(text: str) -> set[str]:
    names = set()
    for token in re.findall(r"(?<![\w:])engine_[a-z_]+", text):
        names.add(re.sub(r"_(bucket|sum|count)$", "", token))
    return names


@pytest.mark.parametrize(
    "path",
    [
        K8S / "monitoring" / "prometheusrule.yaml",
        K8S / "examples" / "prometheus-adapter-values.yaml",
        K8S / "overlays/example/hpa-in-flight.yaml",
        ROOT / "docs" / "deploy.md",
    ],
)
def test_only_metrics_the_engine_exports_are_referenced(path: Path) -> None:
    names = _metric_names(path.read_text())
    assert names, path
    assert names <= METRICS


def test_alerts_have_expressions_and_summaries(rendered: dict[str, list[kustomize.Manifest]]) -> None:
    rules = [r for g in _one(rendered["monitoring"], "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 5
    for rule in alerts:
        assert rule["expr"].strip() and rule["annotations"]["summary"] and rule["labels"]["severity"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
