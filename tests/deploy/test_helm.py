"""The Helm chart documents every value, renders secure, consistent manifests, and its checks bite."""

from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.tools.offline_chart import offline_copy
from tests.deploy.settings_env import settings_from, unknown_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lookalike"
HELM = Path(sys.executable).parent / "helm"
VALIDATE = ROOT / "deploy" / "tools" / "validate_manifests.py"
SECRETS = [
    "--set", "secrets.apiToken=t", "--set", "secrets.blobAccessKey=a", "--set", "secrets.blobSecretKey=s",
]
VALUE_SETS = {
    "default": SECRETS,
    "gpu": [*SECRETS, "-f", str(CHART / "values-gpu.yaml")],
    "external": ["-f", str(CHART / "values-external.yaml")],
    "bundled": [*SECRETS, "--set", "minio.rootUser=a", "--set", "minio.rootPassword=s",
                "-f", str(CHART / "values-bundled.yaml")],
}
COMPONENTS = ("embedder", "api", "ui")
WORKLOADS = ("Deployment", "Job")

needs_helm = pytest.mark.skipif(not HELM.is_file(), reason="no .venv/bin/helm: run `make helm-check` first")


@functools.cache
def offline_chart() -> Path:
    """The chart as `make helm-check` checks it: Milvus and MinIO, never fetched here, left out."""
    out = Path(tempfile.mkdtemp(prefix="lookalike-chart-")) / "lookalike"
    atexit.register(shutil.rmtree, out.parent, True)
    offline_copy(CHART, out)
    return out


def helm_template(*args: str, release: str = "lookalike") -> subprocess.CompletedProcess[str]:
    """Run `helm template` on the chart offline."""
    return subprocess.run(
        [str(HELM), "template", release, str(offline_chart()), *args],
        capture_output=True, text=True, check=False, timeout=60,
    )


def render(*args: str, release: str = "lookalike") -> list[dict[str, Any]]:
    """The rendered manifests; fails the test with helm's message when rendering fails."""
    result = helm_template(*args, release=release)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every Deployment and Job."""
    for doc in manifests:
        if doc["kind"] in WORKLOADS:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests if doc["kind"] == kind]


def settings_map(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The data of the chart's settings ConfigMap."""
    return next(doc["data"] for doc in by_kind(manifests, "ConfigMap")
                if "LOOKALIKE_MILVUS__URI" in doc.get("data", {}))


def component(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one manifest of a kind whose component label is `name`."""
    found = [
        doc for doc in by_kind(manifests, kind)
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == name
    ]
    assert len(found) == 1, (kind, name)
    return found[0]


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every leaf value (an empty mapping counts as a leaf)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    if not HELM.is_file():
        pytest.skip("no .venv/bin/helm: run `make helm-check` first")
    return render(*VALUE_SETS[str(request.param)])


def test_every_value_is_documented() -> None:
    """Every leaf of values.yaml (or a mapping above it) has a `## @param` line, and no param is stale."""
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+) \S", text, flags=re.MULTILINE))
    leaves = set(leaf_paths(yaml.safe_load(text)))
    for leaf in leaves:
        parts = leaf.split(".")
        assert any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1)), leaf
    prefixes = {".".join(leaf.split(".")[:n]) for leaf in leaves for n in range(1, leaf.count(".") + 2)}
    assert documented <= prefixes, documented - prefixes


def test_component_blocks_share_keys() -> None:
    """The embedder, API and UI blocks of values.yaml have the same keys (the embedder adds modelCache)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = {name: set(values[name]) for name in COMPONENTS}
    assert keys["api"] == keys["ui"]
    assert keys["embedder"] == keys["api"] | {"modelCache"}


@needs_helm
def test_lint_strict_passes() -> None:
    """`helm lint --strict` passes with every values file."""
    for args in VALUE_SETS.values():
        result = subprocess.run(
            [str(HELM), "lint", "--strict", str(offline_chart()), *args],
            capture_output=True, text=True, check=False, timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
def test_missing_secrets_fail_rendering() -> None:
    """Without credentials or an existing Secret, rendering stops with a message naming the value."""
    result = helm_template()
    assert result.returncode != 0
    assert "secrets.apiToken is required" in result.stderr


def test_configmap_and_env_are_settings(manifests: list[dict[str, Any]]) -> None:
    """Every LOOKALIKE_* key of the ConfigMap, Secret and container env is read by a field of Settings."""
    names: list[str] = []
    for doc in manifests:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("lookalike"):
            names.extend(doc["data"])
        if doc["kind"] == "Secret":
            names.extend(doc["stringData"])
    for _, spec in pod_specs(manifests):
        for container in spec["containers"]:
            names.extend(env["name"] for env in container.get("env", []))
    assert sum(name.startswith("LOOKALIKE_") for name in names) >= 15
    assert unknown_settings(names) == []


def test_rendered_settings_load(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap (and the Secret, when rendered) parse as Settings: the api pod starts with
    the Milvus and blob endpoints and the tokens the values give."""
    env: dict[str, str] = {}
    for doc in manifests:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "lookalike":
            env.update(doc["data"])
        if doc["kind"] == "Secret":
            env.update(doc["stringData"])
    settings = settings_from(env, monkeypatch)
    assert settings.milvus.uri.startswith("http")
    assert settings.blobs.url.startswith("s3://")
    if by_kind(manifests, "Secret"):
        assert [t.get_secret_value() for t in settings.server.tokens] == ["t"]


@needs_helm
def test_job_roots_reach_the_server_as_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """settings.jobRoots renders as the JSON list the server reads; unset, jobs read nothing."""
    roots = ["s3://inbox/uploads", "/sources"]
    args = [*SECRETS, "--set-json", f"settings.jobRoots={json.dumps(roots)}"]
    assert settings_from(settings_map(render(*args)), monkeypatch).server.job_roots == roots
    assert "LOOKALIKE_SERVER__JOB_ROOTS" not in settings_map(render(*SECRETS))


def test_containers_are_locked_down(manifests: list[dict[str, Any]]) -> None:
    """Every pod runs non-root with seccomp RuntimeDefault, a read-only root and no capabilities."""
    specs = list(pod_specs(manifests))
    assert specs
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert context["runAsNonRoot"] is True, name
            assert re.search(r":[\w.-]+$", container["image"]), container["image"]
            assert not container["image"].endswith(":latest"), container["image"]


def test_grpc_servers_use_native_grpc_probes(manifests: list[dict[str, Any]]) -> None:
    """The embedder and API probe the standard gRPC health service natively on their gRPC port."""
    deployments = [doc for doc in by_kind(manifests, "Deployment")
                   if doc["metadata"]["labels"]["app.kubernetes.io/component"] in ("embedder", "api")]
    assert deployments
    for doc in deployments:
        container = doc["spec"]["template"]["spec"]["containers"][0]
        port = container["ports"][0]["containerPort"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"]["port"] == port


def test_every_deployment_has_a_pdb(manifests: list[dict[str, Any]]) -> None:
    """Each Deployment is covered by a PodDisruptionBudget selecting its pods."""
    pdbs = [doc["spec"]["selector"]["matchLabels"] for doc in by_kind(manifests, "PodDisruptionBudget")]
    for doc in by_kind(manifests, "Deployment"):
        assert doc["spec"]["selector"]["matchLabels"] in pdbs, doc["metadata"]["name"]


@needs_helm
def test_default_layout() -> None:
    """Default: a GPU embedder the API calls remotely, an autoscaled API, the UI, no Job or ServiceMonitor."""
    manifests = render(*SECRETS)
    embedder = component(manifests, "Deployment", "embedder")["spec"]["template"]["spec"]
    assert embedder["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert embedder["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert embedder["containers"][0]["image"].endswith("-cuda")
    api = component(manifests, "Deployment", "api")
    assert "replicas" not in api["spec"]
    env = {e["name"]: e["value"] for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOOKALIKE_EMBED_SERVICE__ADDRESS"] == "lookalike-embedder:50051"
    assert component(manifests, "HorizontalPodAutoscaler", "api")["spec"]["maxReplicas"] == 10
    ui_env = component(manifests, "Deployment", "ui")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOOKALIKE_CLIENT__ADDRESS", "value": "lookalike-api:50051"} in ui_env
    assert not by_kind(manifests, "Job")
    assert not by_kind(manifests, "ServiceMonitor")
    assert len(by_kind(manifests, "NetworkPolicy")) == 3


@needs_helm
def test_gpu_values_shard_ingestion_and_cache_the_model() -> None:
    """GPU values: an Indexed Job over 8 shards reading the listing, a model-cache PVC, ServiceMonitors."""
    manifests = render(*VALUE_SETS["gpu"])
    job = component(manifests, "Job", "ingestion")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 8
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SHARDS"] == "8"
    assert env["LISTING"] == "/sources/listing.txt"
    assert "JOB_COMPLETION_INDEX" in container["args"][0]
    assert "lookalike ingest /tmp/shard.txt" in container["args"][0]
    embedder = component(manifests, "Deployment", "embedder")["spec"]["template"]["spec"]
    claim = next(v for v in embedder["volumes"] if v["name"] == "data")["persistentVolumeClaim"]
    assert component(manifests, "PersistentVolumeClaim", "embedder")["metadata"]["name"] == claim["claimName"]
    assert len(by_kind(manifests, "ServiceMonitor")) == 2


@needs_helm
def test_shard_script_splits_the_listing(tmp_path: Path) -> None:
    """The Job's awk filter gives every listing line to exactly one shard, skipping blank lines."""
    manifests = render(*VALUE_SETS["external"])
    script = component(manifests, "Job", "ingestion")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    awk_program = re.search(r"awk (.*?) > /tmp/shard.txt", script)
    assert awk_program
    listing = tmp_path / "sources.txt"
    lines = [f"https://example.com/{n}.jpg" for n in range(7)]
    listing.write_text("\n".join([*lines[:3], "", *lines[3:]]) + "\n")
    shards = []
    for index in range(3):
        command = f"JOB_COMPLETION_INDEX={index} SHARDS=3 LISTING={listing}; awk {awk_program.group(1)}"
        out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
        shards.append(out.split())
    assert sorted(line for shard in shards for line in shard) == sorted(lines)
    assert all(shards)


@needs_helm
def test_external_values_use_existing_secret_and_no_embedder() -> None:
    """External services: no Secret rendered, pods read the existing one, the API embeds in process."""
    manifests = render(*VALUE_SETS["external"])
    assert not by_kind(manifests, "Secret")
    config = next(doc for doc in by_kind(manifests, "ConfigMap") if doc["metadata"]["name"] == "lookalike")
    assert config["data"]["LOOKALIKE_MILVUS__URI"] == "https://milvus.example.com:19530"
    assert config["data"]["LOOKALIKE_BLOBS__SECURE"] == "true"
    api = component(manifests, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "lookalike-credentials"}} in api["envFrom"]
    assert "LOOKALIKE_EMBED_SERVICE__ADDRESS" not in {e["name"] for e in api["env"]}
    assert not [doc for doc in manifests if doc["metadata"]["name"].endswith("-embedder")]


@needs_helm
def test_names_are_truncated_to_63_characters() -> None:
    """A long release name still yields DNS-label names and labels of at most 63 characters."""
    manifests = render(*VALUE_SETS["gpu"], release="a" * 53)
    for doc in manifests:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        assert all(len(str(v)) <= 63 for v in doc["metadata"]["labels"].values())
    kinds_and_names = [(doc["kind"], doc["metadata"]["name"]) for doc in manifests]
    assert len(set(kinds_and_names)) == len(kinds_and_names)
    assert component(manifests, "Deployment", "api")["metadata"]["name"].endswith("-api")


def run_validator(tmp_path: Path, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(document))
    return subprocess.run(
        [sys.executable, str(VALIDATE), "1.35.0", str(manifest)],
        capture_output=True, text=True, check=False, timeout=120,
    )


def test_validator_rejects_an_invalid_manifest(tmp_path: Path) -> None:
    """The schema validation `make helm-check` runs fails on a Deployment with a misspelt field."""
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i:1", "portz": []}]}}},
    }
    result = run_validator(tmp_path, deployment)
    assert result.returncode == 1, result.stdout
    assert "INVALID" in result.stdout


def test_validator_skips_only_the_named_crds(tmp_path: Path) -> None:
    """ServiceMonitor is skipped by name; any other kind without a schema fails."""
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"}}
    skipped = run_validator(tmp_path, monitor)
    assert skipped.returncode == 0
    assert "skipped (CRD" in skipped.stdout
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert run_validator(tmp_path, unknown).returncode == 1


@needs_helm
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_notes_name_the_rendered_services(values: str) -> None:
    """NOTES.txt renders, and every Service or Job it tells you to use exists in the release."""
    result = subprocess.run(
        [str(HELM), "install", "demo", str(offline_chart()), "--dry-run=client", *VALUE_SETS[values]],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    manifests_text, _, notes = result.stdout.partition("\nNOTES:\n")
    names = {
        (doc["kind"], doc["metadata"]["name"])
        for doc in yaml.safe_load_all(manifests_text.partition("\n---\n")[2]) if doc
    }
    referenced = re.findall(r"port-forward svc/(\S+)", notes)
    assert referenced
    for service in referenced:
        assert ("Service", service) in names, service
    for job in re.findall(r"get job (\S+)", notes):
        assert ("Job", job) in names, job


def test_milvus_and_minio_are_optional_dependencies() -> None:
    """Chart.yaml declares the zilliztech Milvus chart and MinIO, pinned, each behind a condition
    that is off by default (the chart then reaches existing endpoints)."""
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deps = {dep["name"]: dep for dep in meta["dependencies"]}
    assert set(deps) == {"milvus", "minio"}
    assert deps["milvus"]["repository"] == "https://zilliztech.github.io/milvus-helm/"
    assert deps["minio"]["repository"] == "https://charts.min.io/"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, dep in deps.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", dep["version"]), dep
        assert dep["condition"] == f"{name}.enabled"
        assert values[name]["enabled"] is False
    assert values["milvus"]["cluster"]["enabled"] is True


@needs_helm
def test_bundled_values_point_the_pods_at_the_release_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Milvus and MinIO in the release, the pods reach <release>-milvus and <release>-minio."""
    settings = settings_from(settings_map(render(*VALUE_SETS["bundled"], release="search")), monkeypatch)
    assert settings.milvus.uri == "http://search-milvus:19530"
    assert settings.blobs.endpoint == "search-minio:9000"
    assert settings.blobs.secure is False


@needs_helm
def test_bundled_minio_must_share_the_pods_credentials() -> None:
    """MinIO's root user differing from the pods' access key stops rendering with the fix."""
    args = [*SECRETS, "--set", "minio.rootUser=other", "--set", "minio.rootPassword=s",
            "-f", str(CHART / "values-bundled.yaml")]
    result = helm_template(*args)
    assert result.returncode != 0
    assert "minio.rootUser" in result.stderr


def test_offline_copy_leaves_out_only_unfetched_dependencies(tmp_path: Path) -> None:
    """The offline copy drops a dependency with no archive in charts/ and keeps a fetched one."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "charts").mkdir(exist_ok=True)
    (chart / "charts" / "minio-5.4.0.tgz").write_bytes(b"archive")
    dropped = offline_copy(chart, tmp_path / "out")
    assert dropped == ["milvus"]
    meta = yaml.safe_load((tmp_path / "out" / "Chart.yaml").read_text())
    assert [dep["name"] for dep in meta["dependencies"]] == ["minio"]
    assert (tmp_path / "out" / "values.yaml").read_text() == (CHART / "values.yaml").read_text()
