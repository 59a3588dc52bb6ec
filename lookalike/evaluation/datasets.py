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
from lookalike.core.paths import PathRefused, relative_name, shown, within_dataset
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
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _resolved(root: Path, path: Path, what: str, confine: bool) -> Path:
    """`path` resolved; with `confine`, refused when a link leads it outside `root`."""
    return within_dataset(root, path, what) if confine else path.resolve()


def _member(root: Path, folder: Path, name: object, manifest: str, confine: bool) -> Path:
    """The image file a manifest entry names: a relative name without `..` under `folder`,
    resolved (see `_resolved`)."""
    what = f"{manifest}: entry"
    relative = relative_name(name, what)
    if relative.suffix.lower() not in IMAGE_SUFFIXES:
        raise PathRefused(f"{what} {shown(str(name))} is not an image file name "
                          f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _resolved(root, folder / relative, f"{what} {shown(str(name))}", confine)


def _item(path: Path, label: str) -> SourceItem:
    return SourceItem(source=str(path), label=label, path=path)


def _missing(paths: list[Path], root: Path, manifest: str) -> None:
    """ConfigError when a listed file is not there (every path lies inside `root`, or was named
    by the CLI's own user: saying so reveals nothing the caller may not know)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = missing[0].relative_to(root) if missing[0].is_relative_to(root) else missing[0]
        raise ConfigError(f"{len(missing)} files listed in {manifest} are missing, e.g. {shown}")


def _class_dataset(root: Path, confine: bool) -> EvalDataset:
    labels = _read_json(root / "labels.json")
    if not isinstance(labels, dict):
        raise ConfigError(f"{root / 'labels.json'} must map class -> list of files")
    database: list[SourceItem] = []
    members: dict[str, frozenset[str]] = {}
    for cls, files in sorted(labels.items()):
        if not isinstance(files, list):
            raise ConfigError(f"labels.json: class {cls!r} must list its files")
        folder = root / "images" / relative_name(cls, "labels.json: class")
        paths = [_member(root, folder, f, "labels.json", confine) for f in sorted(files, key=str)]
        _missing(paths, root, "labels.json")
        database += [_item(p, cls) for p in paths]
        members[cls] = frozenset(str(p) for p in paths)
    queries = [
        EvalQuery(path=item.path, in_database=True,
                  relevant=members[item.label] - {item.source})
        for item in database
    ]
    return EvalDataset(root.name, "class", database, queries)


def _instance_dataset(root: Path, confine: bool) -> EvalDataset:
    truth = _read_json(root / "groundtruth.json")
    if not isinstance(truth, dict) or not all(
            isinstance(files, list) and all(isinstance(f, str) for f in files)
            for files in truth.values()):
        raise ConfigError(f"{root / 'groundtruth.json'} must map query file -> list of relevant "
                          "file names")
    images = root / "images"

    def path_of(name: object) -> Path:
        return _member(root, images, name, "groundtruth.json", confine)

    names = sorted({f for files in truth.values() for f in files})
    database = [_item(path_of(n), "") for n in names]
    in_database = set(names)
    queries = [
        EvalQuery(path=path_of(q), in_database=q in in_database,
                  relevant=frozenset(str(path_of(r)) for r in rel))
        for q, rel in sorted(truth.items())
    ]
    _missing([item.path for item in database] + [q.path for q in queries], root,
             "groundtruth.json")
    return EvalDataset(root.name, "instance", database, queries)


def _class_images(folder: Path, root: Path, confine: bool) -> list[Path]:
    """Image files directly in `folder`, resolved and sorted; hidden files are left out, and
    with `confine` a link leading outside `root` is refused."""
    paths = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        resolved = _resolved(root, path, shown(str(path.relative_to(root))), confine)
        if resolved.is_file():
            paths.append(resolved)
    return paths


def _folder_dataset(root: Path, confine: bool) -> EvalDataset:
    database: list[SourceItem] = []
    members: dict[str, frozenset[str]] = {}
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if confine:
            within_dataset(root, folder, shown(folder.name))
        paths = _class_images(folder, root, confine)
        if paths:
            database += [_item(p, folder.name) for p in paths]
            members[folder.name] = frozenset(str(p) for p in paths)
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
    return EvalDataset(root.name, "class", database, queries)


def load_dataset(root: Path, *, confine: bool = True) -> EvalDataset:
    """The dataset at `root`: class layout, instance layout, or a plain labelled folder.

    Every file is named by its resolved path. With `confine` (what a server's jobs use), every
    file must lie inside `root`: manifest entries are relative names without `..`, and a link
    leading outside is refused (PathRefused) before anything outside is opened. Without it (the
    CLI on its user's own files), links may lead anywhere.
    """
    root = root.resolve()
    try:
        if (root / "labels.json").is_file():
            return _class_dataset(root, confine)
        if (root / "groundtruth.json").is_file():
            return _instance_dataset(root, confine)
        if root.is_dir():
            return _folder_dataset(root, confine)
    except OSError as exc:  # a folder of the dataset that cannot be listed
        raise ConfigError(f"cannot read the dataset {root}: {exc.strerror or exc} "
                          f"({exc.filename})") from exc
    raise ConfigError(
        f"{root} is not an evaluation dataset: expected a folder of <class>/<image files>, "
        "labels.json (class layout) or groundtruth.json (instance layout)"
    )
