"""The checked-in generated code matches the proto (it is produced by `make proto` only)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = "lookalike/services/gen"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    """Regenerating from the proto gives exactly the checked-in files."""
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    if not (bin_dir / "protoc-gen-mypy").exists():
        raise AssertionError("mypy-protobuf is not installed in this environment")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc",
         f"--proto_path={GEN}={ROOT / 'lookalike/services/proto'}",
         f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}",
         f"{GEN}/lookalike/v1/lookalike.proto"],
        check=True, env=env, cwd=ROOT, capture_output=True,
    )
    fresh = tmp_path / GEN / "lookalike" / "v1"
    checked_in = ROOT / GEN / "lookalike" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in checked_in.iterdir()
                           if p.suffix in (".py", ".pyi") and p.name != "__init__.py")
    stale = [n for n in names if (fresh / n).read_bytes() != (checked_in / n).read_bytes()]
    assert stale == [], f"run `make proto`: {stale} differ from the proto"
    shutil.rmtree(tmp_path / "lookalike")
