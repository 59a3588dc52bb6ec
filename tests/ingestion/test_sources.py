"""Folder sources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lookalike.core.errors import ConfigError
from lookalike.ingestion.sources import folder_items


def test_recursive_sorted_with_parent_folder_as_label(tmp_path: Path) -> None:
    """Images are found recursively in a stable order, labelled by their folder."""
    for rel in ("cats/a.jpg", "cats/deep/b.PNG", "dogs/c.webp", "top.jpg", "notes.txt",
                ".hidden/d.jpg", "dogs/.e.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items = list(folder_items(tmp_path))
    assert [(Path(i.source).relative_to(tmp_path).as_posix(), i.label) for i in items] == [
        ("top.jpg", ""), ("cats/a.jpg", "cats"), ("cats/deep/b.PNG", "deep"),
        ("dogs/c.webp", "dogs"),
    ]


def test_links_outside_the_root_are_not_followed(tmp_path: Path) -> None:
    """A symlinked folder or file pointing outside the root is skipped; one inside is kept."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    (root / "inner" / "ok.jpg").write_bytes(b"x")
    os.symlink(outside, root / "escape")
    os.symlink(outside / "secret.jpg", root / "escape.jpg")
    os.symlink(root / "inner", root / "alias")
    names = sorted(Path(i.source).relative_to(root).as_posix() for i in folder_items(root))
    assert names == ["alias/ok.jpg", "inner/ok.jpg"]


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    """Pointing at something that is not a folder says so."""
    with pytest.raises(ConfigError, match="is not a folder"):
        list(folder_items(tmp_path / "nope"))
