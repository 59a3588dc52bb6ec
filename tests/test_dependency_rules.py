"""The dependency rules of DESIGN.md, checked by parsing every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lookalike"
THIRD_PARTY_FORBIDDEN_IN_CORE = ("torch", "torchvision", "grpc", "streamlit")

# package -> lookalike packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "embedder": set(),
    "ingestion": {"core", "embedder", "services.client"},
    "services": {"core", "embedder"},
    "ui": {"services.client"},
    "maintenance": {"core", "embedder", "ingestion"},
    "evaluation": {"core", "embedder", "ingestion", "services"},
    "training": {"core", "embedder", "evaluation", "ingestion"},
    "app": {"core", "embedder", "ingestion", "maintenance", "services", "evaluation",
            "training"},
    # The composition root: it wires every other part together.
    "cli": {path.stem for path in ROOT.iterdir()
            if (path.suffix == ".py" or (path / "__init__.py").is_file())
            and path.stem not in ("__init__", "__main__", "cli")},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _package_files(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "gen" not in p.relative_to(ROOT).parts]


def _allowed(package: str, module: str) -> bool:
    inner = module.removeprefix("lookalike.")
    if inner == package or inner.startswith(package + "."):
        return True
    return any(inner == dep or inner.startswith(dep + ".") for dep in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_design_allows(package: str) -> None:
    """Each package imports only the lookalike packages DESIGN.md allows it."""
    violations = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _package_files(package)
        for module in _imports(path)
        if module.startswith("lookalike.") and not _allowed(package, module)
    ]
    assert violations == []


def test_core_imports_no_torch_grpc_or_streamlit() -> None:
    """core stays importable without torch, grpc or streamlit."""
    violations = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _package_files("core")
        for module in _imports(path)
        if module.split(".")[0] in THIRD_PARTY_FORBIDDEN_IN_CORE
    ]
    assert violations == []


def test_only_the_composition_root_reads_the_environment() -> None:
    """Nothing but the composition root (the cli package) and the settings module touches
    os.environ."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if "gen" not in path.relative_to(ROOT).parts
        and ("os.environ" in path.read_text() or "os.getenv" in path.read_text())
        and path.relative_to(ROOT).parts[0] != "cli" and path.name != "settings.py"
    ]
    assert offenders == []


def _imported_by_name(path: Path) -> list[str]:
    """Modules `path` loads by a name in a string: import_module("x") and __import__("x"),
    f-strings by their leading text."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, "id", "")
        first = node.args[0]
        if isinstance(first, ast.JoinedStr) and first.values:
            first = first.values[0]
        if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
            names.append(str(first.value))
    return names


def test_the_product_never_imports_bench() -> None:
    """No module of lookalike/ imports the benchmarks, by an import or by name: `lookalike
    bench` runs them in a child process."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in ROOT.rglob("*.py")
        if "gen" not in path.relative_to(ROOT).parts
        for module in [*_imports(path), *_imported_by_name(path)]
        if module == "bench" or module.startswith("bench.")
    ]
    assert offenders == []


def test_the_checker_sees_a_violation() -> None:
    """The rule check is live: an embedder importing core would be flagged."""
    assert not _allowed("embedder", "lookalike.core.errors")
    assert _allowed("ingestion", "lookalike.services.client")
    assert not _allowed("ingestion", "lookalike.services.server")
    assert _allowed("cli", "lookalike.app.compose")
    assert not _allowed("ui", "lookalike.cli")


def test_the_bench_check_sees_imports_by_name(tmp_path: Path) -> None:
    """The bench rule is live: a module loaded by a (formatted) name string is seen."""
    module = tmp_path / "loader.py"
    module.write_text("from importlib import import_module\n"
                      "import_module(f'bench.{name}')\n__import__('bench')\n")
    assert sorted(_imported_by_name(module)) == ["bench", "bench."]
