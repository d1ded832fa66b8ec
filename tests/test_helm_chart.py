"""The Helm chart renders what a fleet relies on: `helm lint --strict` passes, the rendered manifests pass the
real Kubernetes schemas (kubernetes-validate, offline, two versions), and the parsed manifests hold the
essentials: probes on the daemon's routes, node selection per device class, GPUs only where they are, non-root
hardening, keys from the Secret, settings that are real daemon options, and per-node camera streams files that
the daemon's own parser accepts. `.ci/run` installs helm (from a
PyPI wheel, x86_64 only) and kubernetes-validate; without them these tests skip and say why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from edge_daemon.config import OPTIONS, load_settings
from edge_daemon.errors import ApiError
from edge_daemon.streams.config import StreamConfig, load_streams_file
from tests.support.daemon import REPO_ROOT, DaemonProcess

CHART = REPO_ROOT / "deploy" / "helm" / "edge-daemon"
MIXED = REPO_ROOT / "deploy" / "helm" / "examples" / "mixed-fleet.yaml"
GPU_CLASSES = {"jetson", "x86-gpu"}
CLASS_ARCH = {"jetson": "arm64", "arm64": "arm64", "x86": "amd64", "x86-gpu": "amd64"}
OPTION_NAMES = {option.name for option in OPTIONS}
KUBE_VERSIONS = ("1.29", "1.33")
STREAMS_DIR = "/etc/edge-daemon/streams"


def _venv_tool(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def _helm() -> str:
    found = _venv_tool("helm")
    if not found:
        pytest.skip("helm is not installed here (.ci/run extracts it from a PyPI wheel on x86_64 only)")
    return found


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=60)


def render(*extra: str) -> str:
    result = _run(_helm(), "template", "vision", str(CHART), *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.fixture(scope="module")
def mixed() -> list[dict[str, Any]]:
    return documents(render("-f", str(MIXED)))


def daemonsets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """DaemonSets by device class."""
    return {ds["metadata"]["labels"]["app.kubernetes.io/component"]: ds for ds in by_kind(docs, "DaemonSet").values()}


def test_helm_lint_strict() -> None:
    result = _run(_helm(), "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(_helm(), "lint", "--strict", str(CHART), "-f", str(MIXED))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", ["default", "mixed-fleet"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_pass_the_kubernetes_schemas(values: str, kube_version: str) -> None:
    validator = _venv_tool("kubernetes-validate")
    if not validator:
        pytest.skip("kubernetes-validate is not installed here (.ci/run installs it from PyPI)")
    extra = ["-f", str(MIXED)] if values == "mixed-fleet" else []
    rendered = render("--kube-version", f"{kube_version}.0", *extra)
    result = _run(validator, "--strict", "-k", kube_version, "-", stdin=rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout
    # A typo the schema must catch, so a pass above means something.
    broken = rendered.replace("nodeSelector:", "nodeSelecter:", 1)
    assert _run(validator, "--strict", "-k", kube_version, "-", stdin=broken).returncode != 0


def test_one_daemonset_per_class_with_its_image_and_nodes(mixed: list[dict[str, Any]]) -> None:
    sets = daemonsets(mixed)
    assert set(sets) == set(CLASS_ARCH)
    for device_class, ds in sets.items():
        pod = ds["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["kubernetes.io/arch"] == CLASS_ARCH[device_class]
        image = pod["containers"][0]["image"]
        assert image == f"registry.example.lan/vision/edge-daemon:0.1.0-{device_class}"
        expressions = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"][0]["matchExpressions"]
        rules = {(rule["key"], rule["operator"]): rule.get("values") for rule in expressions}
        # NFD's NVIDIA labels keep each class on its own nodes: Tegra CPUs for Jetson, an NVIDIA PCI device
        # for the x86 GPU box, and neither for the plain classes.
        if device_class == "jetson":
            assert rules[("feature.node.kubernetes.io/cpu-model.vendor_id", "In")] == ["NVIDIA"]
        elif device_class == "x86-gpu":
            assert rules[("feature.node.kubernetes.io/pci-10de.present", "In")] == ["true"]
        else:
            assert rules[("nvidia.com/gpu.present", "NotIn")] == ["true"]
        selector = ds["spec"]["selector"]["matchLabels"]
        assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_gpu_limits_and_runtime_class_only_on_gpu_classes(mixed: list[dict[str, Any]]) -> None:
    for device_class, ds in daemonsets(mixed).items():
        pod = ds["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"].get("limits", {})
        tolerated = {toleration["key"] for toleration in pod.get("tolerations", [])}
        if device_class in GPU_CLASSES:
            assert limits["nvidia.com/gpu"] == 1
            assert pod["runtimeClassName"] == "nvidia"
            assert "nvidia.com/gpu" in tolerated
        else:
            assert "nvidia.com/gpu" not in limits
            assert "runtimeClassName" not in pod
            assert "nvidia.com/gpu" not in tolerated
        for init in pod.get("initContainers", []):
            assert "nvidia.com/gpu" not in init.get("resources", {}).get("limits", {})


def test_probes_on_the_daemon_routes(mixed: list[dict[str, Any]]) -> None:
    values = yaml.safe_load(MIXED.read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for device_class, ds in daemonsets(mixed).items():
        container = ds["spec"]["template"]["spec"]["containers"][0]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["http"] == 9001
        probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert probes["startupProbe"]["path"] == "/readiness"
        assert probes["readinessProbe"]["path"] == "/readiness"
        assert probes["livenessProbe"]["path"] == "/healthz"
        assert all(probe["port"] == "http" for probe in probes.values())
        # The startup probe covers the class's startup budget (a first TensorRT build takes minutes).
        startup = container["startupProbe"]
        budget = (values["deviceClasses"][device_class].get("startupSeconds")
                  or defaults["deviceClasses"][device_class]["startupSeconds"])
        assert startup["periodSeconds"] * startup["failureThreshold"] >= budget
        if device_class in GPU_CLASSES:
            assert budget >= 600


def test_hardened_and_non_root(mixed: list[dict[str, Any]]) -> None:
    for ds in daemonsets(mixed).values():
        pod = ds["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        containers = pod["containers"] + pod.get("initContainers", [])
        for container in containers:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "add" not in context["capabilities"]
            mounts = {mount["mountPath"]: mount.get("readOnly", False) for mount in container["volumeMounts"]}
            if container["name"] == "streams":  # copies this node's streams file out of the Secret
                assert mounts == {"/run/edge-daemon/streams-by-node": True, STREAMS_DIR: False}
            elif container["name"] == "edge-daemon":
                assert mounts.pop(STREAMS_DIR) is True
            if container["name"] != "streams":
                assert set(mounts) == {"/var/cache/edge-daemon", "/var/lib/edge-daemon/models", "/tmp"}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["cache"]["hostPath"]["path"] == "/var/cache/edge-daemon"
        assert {"hostPath"} <= set(volumes["cache"]) and "emptyDir" in volumes["tmp"]


def test_keys_come_from_the_secret_never_the_configmap(mixed: list[dict[str, Any]]) -> None:
    for ds in daemonsets(mixed).values():
        pod = ds["spec"]["template"]["spec"]
        for container in pod["containers"] + pod["initContainers"]:
            env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container.get("env", [])
                   if "secretKeyRef" in item["valueFrom"]}
            if container["name"] == "streams":
                assert not env  # needs no registry or access keys
                continue
            assert env["EDGE_DAEMON_API_KEY"]["name"] == "edge-daemon-keys"
            assert env["EDGE_DAEMON_ACCESS_KEYS"]["name"] == "edge-daemon-keys"
    for config in by_kind(mixed, "ConfigMap").values():
        assert not {"EDGE_DAEMON_API_KEY", "EDGE_DAEMON_ACCESS_KEYS"} & set(config["data"])
    refused = _run(_helm(), "template", "vision", str(CHART), "--set", "settings.api_key=abc")
    assert refused.returncode != 0 and "settings.api_key is set by the chart" in refused.stderr


def test_chart_made_secret_is_referenced() -> None:
    docs = documents(render("--set", "secret.create=true", "--set", "secret.apiKey=reg-key",
                            "--set", "secret.accessKeys={k1,k2}"))
    secret = by_kind(docs, "Secret")["vision-edge-daemon"]
    assert secret["stringData"] == {"api-key": "reg-key", "access-keys": "k1,k2"}
    container = daemonsets(docs)["x86"]["spec"]["template"]["spec"]["containers"][0]
    assert {item["valueFrom"]["secretKeyRef"]["name"] for item in container["env"]} == {"vision-edge-daemon"}


def test_settings_in_the_values_files_are_real_daemon_options() -> None:
    for path in (MIXED, CHART / "values.yaml"):
        values = yaml.safe_load(path.read_text())
        keys = set(values.get("settings") or {})
        for spec in (values.get("deviceClasses") or {}).values():
            keys |= set(spec.get("settings") or {})
        assert keys, path
        assert keys <= OPTION_NAMES, f"{path.name}: not edge-daemon options: {sorted(keys - OPTION_NAMES)}"


def test_rendered_settings_parse_as_daemon_settings(mixed: list[dict[str, Any]]) -> None:
    env_names = {option.env for option in OPTIONS}
    for name, config in by_kind(mixed, "ConfigMap").items():
        assert set(config["data"]) <= env_names, name
        settings = load_settings({}, config["data"])  # the daemon parses every rendered value
        assert settings.port == 9001 and settings.preload == ["gates-detector/3", "shapes/1"]
        # streams added over HTTP live on the node's cache volume: the root filesystem is read-only
        assert settings.state_dir.startswith(settings.cache_dir + "/")
    x86_gpu = load_settings({}, by_kind(mixed, "ConfigMap")["vision-edge-daemon-x86-gpu"]["data"])
    assert (x86_gpu.backend, x86_gpu.max_batch, x86_gpu.max_body_bytes) == ("tensorrt", 32, 33554432)
    assert x86_gpu.cors_origins == ["http://nvr.example.lan"] and x86_gpu.request_timeout == 20.0


def test_init_container_pulls_models_into_the_node_cache(mixed: list[dict[str, Any]]) -> None:
    for ds in daemonsets(mixed).values():
        inits = [init for init in ds["spec"]["template"]["spec"]["initContainers"] if init["name"] != "streams"]
        assert [init["command"] + init["args"] for init in inits] == [
            ["edge-daemon", "models", "pull", "gates-detector/3"]]
        assert inits[0]["image"] == ds["spec"]["template"]["spec"]["containers"][0]["image"]


def test_service_spreads_or_stays_local_and_metrics_are_scraped(mixed: list[dict[str, Any]]) -> None:
    service = by_kind(mixed, "Service")["vision-edge-daemon"]["spec"]
    assert service["type"] == "NodePort" and service["ports"][0]["nodePort"] == 30901
    assert service["internalTrafficPolicy"] == service["externalTrafficPolicy"] == "Local"
    for ds in daemonsets(mixed).values():
        labels = ds["spec"]["template"]["metadata"]["labels"]
        assert service["selector"].items() <= labels.items()
        annotations = ds["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    default_service = by_kind(documents(render()), "Service")["vision-edge-daemon"]["spec"]
    assert default_service["type"] == "ClusterIP" and "externalTrafficPolicy" not in default_service
    monitored = by_kind(documents(render("--set", "metrics.serviceMonitor.enabled=true")), "ServiceMonitor")
    endpoint = monitored["vision-edge-daemon"]["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


# ----- camera streams per node (streams.byNode) ---------------------------------------------------------------

def _streams_secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    return by_kind(docs, "Secret")["vision-edge-daemon-streams"]["stringData"]


def _load_node_file(tmp_path: Path, node: str, text: str) -> list[StreamConfig]:
    path = tmp_path / f"{node}.toml"
    path.write_text(text)
    return load_streams_file(path)  # what the daemon does with --streams-file at start


def test_streams_secret_holds_one_valid_file_per_node(mixed: list[dict[str, Any]], tmp_path: Path) -> None:
    by_node = yaml.safe_load(MIXED.read_text())["streams"]["byNode"]
    files = _streams_secret(mixed)
    assert set(files) == {f"{node}.toml" for node in by_node} == {"gate-orin-1.toml", "shelf-pi-3.toml"}
    for node, streams in by_node.items():
        loaded = _load_node_file(tmp_path, node, files[f"{node}.toml"])
        # Every field survives the trip values -> TOML -> the daemon's strict parser unchanged.
        assert [config.model_dump() for config in loaded] == [
            StreamConfig.model_validate(stream).model_dump() for stream in streams]
    gate_north, gate_south = _load_node_file(tmp_path, "gate-orin-1", files["gate-orin-1.toml"])
    assert (gate_north.id, gate_north.max_fps, gate_north.sinks[0].qos, gate_north.tracking) == (
        "gate-north", 5.0, 1, True)
    assert gate_north.zones[0].points[2] == [0.9, 1.0]
    assert (gate_south.max_fps, gate_south.classes) == (2.5, ["car", "truck"])
    # The passwords live in the Secret only: not in ConfigMaps, not in the pod specs.
    for kind in ("ConfigMap", "DaemonSet", "Service"):
        for doc in by_kind(mixed, kind).values():
            assert "CHANGE-ME" not in yaml.safe_dump(doc)


def test_streams_toml_keeps_awkward_strings_numbers_and_empty_nodes(tmp_path: Path) -> None:
    awkward = ['say "hi" \\ <b>&amp;', "ünïcödé ✓", "tab\tand 'single'", "#not-a-comment", "a = b"]
    values = {"streams": {"byNode": {
        "node-a.site.lan": [{"id": "cam.1", "source": "rtsps://u%40x:p%3Aw%22d@10.0.0.9:322/live?ch=1&sub=0",
                             "model_id": "shapes/1", "max_fps": 0.25, "confidence": 0, "iou_threshold": 1,
                             "max_detections": 1000, "stall_timeout": 12.75, "classes": awkward,
                             "sinks": [{"type": "webhook", "url": "https://hooks.lan/x?a=1&b=2",
                                        "secret": 'k"\\ey', "timeout": 0.5, "queue_size": 3}]}],
        "node-b": [{"id": "cam2", "source": "file:///srv/clips/loop.mp4", "model_id": "shapes/1", "loop": False,
                    "paused": True, "classes": None}],
        "node-idle": []}}}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True))
    files = _streams_secret(documents(render("-f", str(path))))
    for node, streams in values["streams"]["byNode"].items():
        loaded = _load_node_file(tmp_path, node, files[f"{node}.toml"])
        assert [config.model_dump() for config in loaded] == [
            StreamConfig.model_validate(stream).model_dump() for stream in streams]
    assert _load_node_file(tmp_path, "node-a", files["node-a.site.lan.toml"])[0].classes == awkward
    assert files["node-idle.toml"].strip() == ""


def test_pods_take_their_streams_file_from_the_node_they_run_on(mixed: list[dict[str, Any]]) -> None:
    for ds in daemonsets(mixed).values():
        pod = ds["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == ["serve", "--streams-file", f"{STREAMS_DIR}/$(NODE_NAME).toml"]
        env = {item["name"]: item for item in container["env"]}
        # The downward API; it comes first so that Kubernetes expands $(NODE_NAME) in the args.
        assert container["env"][0]["name"] == "NODE_NAME"
        assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        streams_init = pod["initContainers"][0]
        assert streams_init["name"] == "streams"
        assert streams_init["env"] == [env["NODE_NAME"]]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["streams-by-node"]["secret"]["secretName"] == "vision-edge-daemon-streams"
        assert volumes["streams-by-node"]["secret"]["defaultMode"] == 0o440
        assert volumes["streams"]["emptyDir"]["medium"] == "Memory"
        # Only the init container sees every node's file; the daemon gets its own node's copy, read-only.
        mounted = {mount["name"]: mount for container in pod["containers"] for mount in container["volumeMounts"]}
        assert "streams-by-node" not in mounted
        assert mounted["streams"] == {"name": "streams", "mountPath": STREAMS_DIR, "readOnly": True}
        assert "checksum/streams" in ds["spec"]["template"]["metadata"]["annotations"]
    # Without streams the pods are as before.
    plain = daemonsets(documents(render()))["x86"]["spec"]["template"]["spec"]
    assert plain["containers"][0]["args"] == ["serve"] and "initContainers" not in plain
    assert "Secret" not in {doc["kind"] for doc in documents(render())}


def _run_streams_init(init: dict[str, Any], source: Path, target: Path, node: str) -> str:
    """The init container's own command, on real files (the Secret and emptyDir swapped for folders)."""
    command = init["command"] + init["args"]
    assert command[-2:] == ["/run/edge-daemon/streams-by-node", STREAMS_DIR]
    result = subprocess.run([*command[:-2], str(source), str(target)], env={**os.environ, "NODE_NAME": node},
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def test_every_node_starts_listed_or_not(mixed: list[dict[str, Any]], tmp_path: Path) -> None:
    if not shutil.which("sh"):
        pytest.skip("no sh here to run the init container's command")
    init = daemonsets(mixed)["x86"]["spec"]["template"]["spec"]["initContainers"][0]
    source, target = tmp_path / "secret", tmp_path / "node"
    source.mkdir()
    target.mkdir()
    for key, text in _streams_secret(mixed).items():
        (source / key).write_text(text)
    _run_streams_init(init, source, target, "gate-orin-1")
    assert [config.id for config in load_streams_file(target / "gate-orin-1.toml")] == ["gate-north", "gate-south"]
    assert "no streams for node office-nuc-1" in _run_streams_init(init, source, target, "office-nuc-1")
    assert (target / "office-nuc-1.toml").read_text() == ""
    # The daemon refuses a missing streams file, which is why the init container writes an empty one ...
    with pytest.raises(ApiError, match="missing.toml"):
        load_streams_file(target / "missing.toml")
    # ... and with the empty one a real daemon starts and serves no streams.
    daemon = DaemonProcess(["--streams-file", str(target / "office-nuc-1.toml"), "--cache-dir", str(tmp_path / "c"),
                            "--state-dir", str(tmp_path / "state"), "--ort-threads", "1"],
                           log_path=tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        assert requests.get(daemon.url + "/streams", timeout=5).json() == {"streams": []}
    finally:
        daemon.stop()


def test_streams_values_mistakes_are_refused_without_leaking_passwords(tmp_path: Path) -> None:
    values = yaml.safe_load(MIXED.read_text())
    twice = values["streams"]["byNode"]
    twice["shelf-pi-3"].append({**twice["gate-orin-1"][0], "id": "again"})
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(values))
    refused = _run(_helm(), "template", "vision", str(CHART), "-f", str(path))
    assert refused.returncode != 0 and "pull the same camera" in refused.stderr
    assert "CHANGE-ME" not in refused.stderr
    for extra, message in [
        (["--set", "streams.byNode.Bad_Node[0].id=x"], "not a Kubernetes node name"),
        (["--set", "streams.byNode.node-1=oops"], "must be a list of streams"),
        (["-f", str(MIXED), "--set", "streams.existingSecret=mine"], "not both"),
        (["-f", str(MIXED), "--set", "settings.streams_file=/x.toml"], "settings.streams_file is set by the chart"),
    ]:
        refused = _run(_helm(), "template", "vision", str(CHART), *extra)
        assert refused.returncode != 0 and message in refused.stderr, (extra, refused.stderr)


def test_streams_from_a_secret_of_your_own() -> None:
    docs = documents(render("--set", "streams.existingSecret=site-cameras"))
    assert "Secret" not in {doc["kind"] for doc in docs}
    pod = daemonsets(docs)["arm64"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["streams-by-node"]["secret"]["secretName"] == "site-cameras"
    assert pod["containers"][0]["args"][1:] == ["--streams-file", f"{STREAMS_DIR}/$(NODE_NAME).toml"]
