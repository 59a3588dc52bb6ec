"""Evaluation dataset layouts (see shared/datasets/README.md).

Class layout: `images/<class>/<file>` with `labels.json` (class -> files); every image queries all
the others and an answer is relevant when it has the query's class.
Instance layout: `images/<file>` with `groundtruth.json` (query file -> relevant files, the query
excluded); the database is every file named as relevant, and a query outside it is searched by
its bytes.
Plain labelled folder: `<class>/<image files>` (no JSON); the sub-folder names are the classes,
every image is in the database, and each image of a class with two or more images queries the
others (an image alone in its class is only a distractor).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lookalike.core.errors import ConfigError
from lookalike.ingestion.sources import IMAGE_SUFFIXES, SourceItem


@dataclass(frozen=True, slots=True)
class EvalQuery:
    """One query: its file, whether it is in the database, and what is relevant to it."""

    path: Path
    in_database: bool
    relevant: frozenset[str]


@dataclass(frozen=True, slots=True)
class EvalDataset:
    """A labelled dataset ready to ingest and query."""

    name: str
    kind: Literal["class", "instance"]
    database: list[SourceItem]
    queries: list[EvalQuery]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _class_dataset(root: Path) -> EvalDataset:
    labels = _read_json(root / "labels.json")
    if not isinstance(labels, dict):
        raise ConfigError(f"{root / 'labels.json'} must map class -> list of files")
    database: list[SourceItem] = []
    members: dict[str, frozenset[str]] = {}
    for cls, files in sorted(labels.items()):
        paths = [root / "images" / cls / f for f in sorted(files)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(f"{len(missing)} files listed in labels.json are missing, e.g. {missing[0]}")
        database += [SourceItem(source=str(p.absolute()), label=cls, path=p) for p in paths]
        members[cls] = frozenset(str(p.absolute()) for p in paths)
    queries = [
        EvalQuery(path=item.path, in_database=True,
                  relevant=members[item.label] - {item.source})
        for item in database
    ]
    return EvalDataset(root.name, "class", database, queries)


def _instance_dataset(root: Path) -> EvalDataset:
    truth = _read_json(root / "groundtruth.json")
    if not isinstance(truth, dict):
        raise ConfigError(f"{root / 'groundtruth.json'} must map query file -> relevant files")
    images = root / "images"
    names = sorted({str(f) for files in truth.values() for f in files})
    database = [
        SourceItem(source=str((images / n).absolute()), label="", path=images / n) for n in names
    ]
    in_db = set(names)
    queries = [
        EvalQuery(path=images / q, in_database=q in in_db,
                  relevant=frozenset(str((images / r).absolute()) for r in rel))
        for q, rel in sorted(truth.items())
    ]
    return EvalDataset(root.name, "instance", database, queries)


def _class_images(folder: Path, root: Path) -> list[Path]:
    """Image files directly in `folder`, sorted; hidden files and links leading outside `root`
    are left out."""
    return [
        path for path in sorted(folder.iterdir())
        if not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file() and path.resolve().is_relative_to(root)
    ]


def _folder_dataset(root: Path) -> EvalDataset:
    resolved = root.resolve()
    database: list[SourceItem] = []
    members: dict[str, frozenset[str]] = {}
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if not folder.resolve().is_relative_to(resolved):
            continue
        paths = _class_images(folder, resolved)
        if paths:
            database += [SourceItem(source=str(p.absolute()), label=folder.name, path=p)
                         for p in paths]
            members[folder.name] = frozenset(str(p.absolute()) for p in paths)
    if len(members) < 2:
        found = f"found {len(members)}: {', '.join(members)}" if members else "found none"
        raise ConfigError(
            f"{root} is not an evaluation dataset: expected <class>/<image files> sub-folders "
            f"with images of at least 2 classes ({found}), labels.json (class layout) or "
            "groundtruth.json (instance layout)"
        )
    queries = [
        EvalQuery(path=item.path, in_database=True, relevant=members[item.label] - {item.source})
        for item in database if len(members[item.label]) > 1
    ]
    if not queries:
        raise ConfigError(f"{root}: every class has a single image, so nothing can be queried; "
                          "a class needs at least 2 images")
    return EvalDataset(resolved.name, "class", database, queries)


def load_dataset(root: Path) -> EvalDataset:
    """The dataset at `root`: class layout, instance layout, or a plain labelled folder."""
    if (root / "labels.json").is_file():
        return _class_dataset(root)
    if (root / "groundtruth.json").is_file():
        return _instance_dataset(root)
    if root.is_dir():
        return _folder_dataset(root)
    raise ConfigError(
        f"{root} is not an evaluation dataset: expected a folder of <class>/<image files>, "
        "labels.json (class layout) or groundtruth.json (instance layout)"
    )
