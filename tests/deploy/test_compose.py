"""docker-compose, its GPU override, Dockerfiles, Prometheus and Grafana are well-formed and consistent."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lookalike.ingestion.metrics import IngestMetrics
from lookalike.services.metrics import ServerMetrics
from tests.deploy.settings_env import (
    interpolate,
    setting_env_names,
    settings_from,
    unknown_settings,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = {"etcd", "minio", "milvus", "server", "ui", "prometheus", "grafana"}
SECRET_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "TOKEN", "ROOT_USER")
REQUIRED_VAR = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}")


def load(name: str) -> dict[str, Any]:
    """One YAML file under deploy/ as a mapping."""
    data = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(data, dict), name
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two compose forms it uses."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(str(item).split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def image_is_pinned(image: str) -> bool:
    """A tag that names a version: present, not `latest`, no unresolved variable."""
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and "$" not in image


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    """The stack is etcd, MinIO, Milvus, the server, the UI, Prometheus and Grafana."""
    assert set(compose["services"]) == SERVICES


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_has_healthcheck_and_pinned_image(compose: dict[str, Any], service: str) -> None:
    """Every service has a healthcheck command and an image with a pinned version tag."""
    spec = compose["services"][service]
    test = spec["healthcheck"]["test"]
    assert isinstance(test, list)
    assert test[0] in ("CMD", "CMD-SHELL")
    assert len(test) > 1
    assert image_is_pinned(spec["image"]), spec["image"]


def test_server_healthcheck_uses_lookalike_health(compose: dict[str, Any]) -> None:
    """The server is healthy when `lookalike health` says SERVING."""
    assert compose["services"]["server"]["healthcheck"]["test"][1:3] == ["lookalike", "health"]


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    """Every depends_on waits for service_healthy of a service that exists."""
    for name, spec in compose["services"].items():
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in SERVICES, (name, dependency)
            assert condition == {"condition": "service_healthy"}, (name, dependency)
    assert set(compose["services"]["server"]["depends_on"]) == {"milvus", "minio"}


@pytest.mark.parametrize("file", ["docker-compose.yml", "docker-compose.gpu.yml"])
def test_lookalike_variables_are_settings(file: str) -> None:
    """Every LOOKALIKE_* variable the compose files pass is read by a field of Settings."""
    services = load(file)["services"]
    names = [key for spec in services.values() for key in environment(spec)]
    assert any(name.startswith("LOOKALIKE_") for name in names)
    assert unknown_settings(names) == []


def test_service_environments_load_as_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the required variables set, the server's and the UI's environments parse as Settings:
    JSON lists, numbers and booleans included, and the UI reaches the server with the same token."""
    variables = {"MINIO_ROOT_USER": "minio-user", "MINIO_ROOT_PASSWORD": "minio-password",
                 "LOOKALIKE_API_TOKEN": "api-token"}
    services = compose["services"]
    server_env = {k: interpolate(v, variables) for k, v in environment(services["server"]).items()}
    server = settings_from(server_env, monkeypatch)
    assert [t.get_secret_value() for t in server.server.tokens] == ["api-token"]
    assert server.server.job_roots == ["/images"]
    assert server.milvus.uri == "http://milvus:19530"
    assert server.blobs.url == "s3://lookalike-images"
    assert server.blobs.secure is False
    assert server.server.metrics_port == 9464
    ui_env = {k: interpolate(v, variables) for k, v in environment(services["ui"]).items()}
    ui = settings_from(ui_env, monkeypatch)
    assert ui.client.address == f"server:{server.server.port}"
    assert ui.client.token.get_secret_value() == "api-token"


def test_interpolation_refuses_an_unset_required_variable() -> None:
    assert interpolate("${A:-x}/${B:?set B}", {"B": "b"}) == "x/b"
    with pytest.raises(KeyError, match="set B"):
        interpolate("${B:?set B}", {})


def test_settings_walk_finds_nested_names() -> None:
    """The walk over Settings yields nested names and would flag a misspelt one."""
    names = setting_env_names()
    assert {"LOOKALIKE_DATA_DIR", "LOOKALIKE_MILVUS__URI", "LOOKALIKE_SERVER__TOKENS"} <= names
    assert unknown_settings(["LOOKALIKE_MILVUS__URL", "LOOKALIKE_DATA_DIR", "OTHER"]) == [
        "LOOKALIKE_MILVUS__URL"
    ]


def test_secrets_fail_loudly_when_unset(compose: dict[str, Any]) -> None:
    """Credentials come from ${VAR:?message} only: compose refuses to start while one is unset."""
    secrets = {
        (name, key): value
        for name, spec in compose["services"].items()
        for key, value in environment(spec).items()
        if any(word in key.upper() for word in SECRET_WORDS)
    }
    assert len(secrets) >= 8
    for where, value in secrets.items():
        assert REQUIRED_VAR.search(value), where
        assert REQUIRED_VAR.sub("", value) in ("", '[""]'), where


def test_gpu_override_reserves_an_nvidia_gpu() -> None:
    """The GPU override runs the CUDA image on device cuda with an NVIDIA device reservation."""
    server = load("docker-compose.gpu.yml")["services"]["server"]
    assert server["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    assert image_is_pinned(server["image"])
    assert environment(server)["LOOKALIKE_MODEL__DEVICE"] == "cuda"
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda", "Dockerfile.ui"])
def test_dockerfile_is_multistage_pinned_nonroot_with_tini(dockerfile: str) -> None:
    """Images build in stages from pinned bases and run as a non-root user under tini."""
    text = (DEPLOY / dockerfile).read_text()
    bases = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", text, flags=re.MULTILINE))
    stages = re.findall(r"^FROM \$\{(\w+)\} AS \w+$", text, flags=re.MULTILINE)
    assert len(stages) >= 2
    assert all(image_is_pinned(bases[arg]) for arg in stages)
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--"', text, flags=re.MULTILINE)


def test_compose_builds_existing_dockerfiles(compose: dict[str, Any]) -> None:
    """The services built here point at Dockerfiles that exist."""
    built = [spec["build"] for spec in compose["services"].values() if "build" in spec]
    assert len(built) == 2
    for build in built:
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_prometheus_scrapes_the_metrics_ports(compose: dict[str, Any]) -> None:
    """Prometheus scrapes the server's metrics port and the ingest metrics port the README names."""
    server_env = environment(compose["services"]["server"])
    targets = {
        target
        for job in load("prometheus/prometheus.yml")["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert f"server:{server_env['LOOKALIKE_SERVER__METRICS_PORT']}" in targets
    assert server_env["LOOKALIKE_SERVER__METRICS_HOST"] == "0.0.0.0"
    assert "server:9102" in targets


def test_dashboard_queries_exported_metrics() -> None:
    """Every series the provisioned dashboard queries is exported by the server or ingestion."""
    families = {
        metric.name
        for registry in (ServerMetrics().registry, IngestMetrics().registry)
        for metric in registry.collect()
    }
    dashboard = json.loads((DEPLOY / "grafana/dashboards/lookalike.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    series = {name for expr in exprs for name in re.findall(r"\b(lookalike_\w+)", expr)}
    assert len(series) >= 4
    for name in series:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert base in families, name
    provisioning = load("grafana/provisioning/dashboards/lookalike.yml")
    assert provisioning["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
