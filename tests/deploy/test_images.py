"""What the Docker images ship: none carries the benchmarks, and the UI's installs no torch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TORCH = ("torch", "torchvision")


def _requirements(extra: str, optional: dict[str, list[str]]) -> set[str]:
    """The distributions an extra of pyproject.toml pulls in, through `lookalike[...]` too."""
    names: set[str] = set()
    for requirement in optional[extra]:
        if nested := re.fullmatch(r"lookalike\[([\w,]+)\]", requirement):
            for inner in nested.group(1).split(","):
                names |= _requirements(inner, optional)
        else:
            names.add(_name(requirement))
    return names


def _name(requirement: str) -> str:
    """The distribution a requirement names: "torch==2.14.1" -> "torch"."""
    return re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0].lower()


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda", "Dockerfile.ui"])
def test_no_image_copies_the_benchmarks(dockerfile: str) -> None:
    """bench/ is measurement code, run from a checkout; the product never imports it."""
    text = (DEPLOY / dockerfile).read_text()
    assert re.search(r"^COPY\s+\S*bench\b", text, flags=re.MULTILINE) is None


def test_ui_image_installs_no_torch() -> None:
    """The UI image installs the `ui` extra alone, which pulls in no torch, from no torch index."""
    text = (DEPLOY / "Dockerfile.ui").read_text()
    extras = re.findall(r"pip install [^\n]*'\.\[([\w,]+)\]'", text)
    assert extras == ["ui"]
    assert "download.pytorch.org" not in text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pulled = {_name(requirement) for requirement in project["dependencies"]} | _requirements(
        "ui", project["optional-dependencies"])
    assert not pulled & set(TORCH)
    # The check is live: the server's extra, through the embedder's, does pull torch in.
    assert "torch" in _requirements("server", project["optional-dependencies"])
    assert {"grpcio", "grpcio-health-checking", "streamlit"} <= pulled
