"""Where images come from: each source yields items lazily, in a stable order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lookalike.core.errors import ConfigError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One image to ingest: where it came from, its label, and how to read it."""

    source: str
    label: str
    path: Path

    def read(self) -> bytes:
        """The file's bytes."""
        return self.path.read_bytes()


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def folder_items(root: Path) -> Iterator[SourceItem]:
    """Image files under `root`, recursively, sorted; the parent folder's name is the label.

    Hidden files and folders are skipped, and links that lead outside `root` are never followed.
    """
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    resolved_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        current = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and _inside(resolved_root, current / d)
        )
        for name in sorted(filenames):
            path = current / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not _inside(resolved_root, path):
                continue
            label = current.name if current != root else ""
            yield SourceItem(source=str(path.absolute()), label=label, path=path)
