"""Validate rendered Kubernetes manifests against the schemas `kubernetes-validate` ships (offline).

Custom resources have no schema there: the kinds in SKIPPED_CRDS (the Prometheus Operator's
ServiceMonitor) are skipped explicitly and named in the output; any other unknown kind fails.
Usage: python deploy/tools/validate_manifests.py K8S_VERSION FILE...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml

SKIPPED_CRDS = frozenset({("monitoring.coreos.com/v1", "ServiceMonitor")})


def documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document file."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def validate(version: str, paths: list[Path]) -> int:
    """Validate every document; returns the number of failures."""
    failures = checked = 0
    for path in paths:
        for doc in documents(path):
            kind, api = doc.get("kind", "?"), doc.get("apiVersion", "?")
            name = f"{path.name}: {api} {kind} {doc.get('metadata', {}).get('name', '?')}"
            if (api, kind) in SKIPPED_CRDS:
                print(f"skipped (CRD, no schema shipped): {name}")
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                failures += 1
                print(f"INVALID {name}: {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                failures += 1
                print(f"NO SCHEMA {name} for Kubernetes {version}")
            else:
                checked += 1
    print(f"{checked} manifests valid against Kubernetes {version}, {failures} failed")
    return failures


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    sys.exit(1 if validate(sys.argv[1], [Path(p) for p in sys.argv[2:]]) else 0)
