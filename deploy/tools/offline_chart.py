"""Copy a chart for offline checks, leaving out the dependencies that were never fetched.

`helm lint --strict` and `helm template` refuse a chart whose dependencies are missing from its
charts/ folder, even when their conditions are off, and fetching them needs the internet. The
copy keeps everything but the `dependencies` entries with no archive in charts/, and says which
it dropped, so the chart's own templates are linted, rendered and validated offline; the
dependencies themselves are rendered by `helm dependency build` and `helm install`, not here.
Usage: python deploy/tools/offline_chart.py CHART OUT
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml


def fetched(chart: Path, dependency: dict[str, Any]) -> bool:
    """Whether charts/ holds the dependency (an archive or an unpacked folder)."""
    folder = chart / "charts"
    name = str(dependency["name"])
    return (folder / name).is_dir() or any(folder.glob(f"{name}-*.tgz"))


def offline_copy(chart: Path, out: Path) -> list[str]:
    """Copy `chart` to `out` without its unfetched dependencies; returns the names dropped."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(chart, out)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    dependencies = meta.get("dependencies") or []
    kept = [dep for dep in dependencies if fetched(chart, dep)]
    dropped = [str(dep["name"]) for dep in dependencies if not fetched(chart, dep)]
    if dropped:
        if kept:
            meta["dependencies"] = kept
        else:
            meta.pop("dependencies", None)
        (out / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        lock = out / "Chart.lock"
        if lock.exists():
            lock.unlink()
    return dropped


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    chart, out = Path(argv[0]), Path(argv[1])
    dropped = offline_copy(chart, out)
    for name in dropped:
        print(f"{out}: dependency {name!r} not fetched (no charts/{name}-*.tgz): left out of the offline checks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
