"""Evaluation dataset layouts (docs/DATASETS.md states them and their protocols).

Class layout: `images/<class>/<file>` with `labels.json` (class -> files); every image queries all
the others and an answer is relevant when it has the query's class.
Instance layout: `images/<file>` with `groundtruth.json` (query file -> relevant files, the query
excluded) and optionally `junk.json` (query file -> files that count neither way for it). Every
image under `images/` is in the database: the files the ground truth names, and the distractors
it names nowhere. A query that no query names as relevant was taken apart from the database (a
phone photo of a cover, say) and is searched by its bytes; any other query is a database image.
Each query's junk is removed from its ranking before scoring (the Oxford and Paris protocol).
Plain labelled folder: `<class>/<image files>` (no JSON); the sub-folder names are the classes,
every image is in the database, and each image of a class with two or more images queries the
others (an image alone in its class is only a distractor).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lookalike.core.errors import ConfigError
from lookalike.core.paths import PathRefused, relative_name, shown, within_dataset
from lookalike.ingestion.sources import IMAGE_SUFFIXES, SourceItem

CLASS_PROTOCOL = "class: every image queries all the others; relevant = the same class"


@dataclass(frozen=True, slots=True)
class EvalQuery:
    """One query: its file, whether it is in the database, what is relevant to it, and what is
    junk for it (removed from its ranking before scoring); files by their database sources."""

    path: Path
    in_database: bool
    relevant: frozenset[str]
    junk: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EvalDataset:
    """A labelled dataset ready to ingest and query, and the protocol it is scored by, in
    words."""

    name: str
    kind: Literal["class", "instance"]
    database: list[SourceItem]
    queries: list[EvalQuery]
    protocol: str = CLASS_PROTOCOL


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


def _name_lists(root: Path, manifest: str, required: bool) -> dict[str, list[str]]:
    """`manifest` (query file -> list of file names) read and checked; {} when it is not there
    and not `required`."""
    path = root / manifest
    if not required and not path.is_file():
        return {}
    lists = _read_json(path)
    if not isinstance(lists, dict) or not all(
            isinstance(files, list) and all(isinstance(f, str) for f in files)
            for files in lists.values()):
        raise ConfigError(f"{path} must map query file -> list of file names")
    return lists


def _image_files(folder: Path, root: Path, confine: bool) -> dict[str, Path]:
    """Every image under `folder`, recursively, by its name relative to it (hidden files and
    folders left out), resolved (see `_resolved`)."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            relative = path.relative_to(folder).as_posix()
            found[relative] = _resolved(root, path, shown(relative), confine)
    return found


def _instance_dataset(root: Path, confine: bool) -> EvalDataset:
    truth = _name_lists(root, "groundtruth.json", required=True)
    junk = _name_lists(root, "junk.json", required=False)
    images = root / "images"

    def path_of(name: object, manifest: str) -> Path:
        return _member(root, images, name, manifest, confine)

    named = {n: path_of(n, "groundtruth.json") for n in {*truth, *(f for v in truth.values()
                                                                    for f in v)}}
    ignored = {n: path_of(n, "junk.json") for n in {f for v in junk.values() for f in v}}
    _missing(list({**named, **ignored}.values()), root, "groundtruth.json or junk.json")
    unknown = sorted(set(junk) - set(truth))
    if unknown:
        raise ConfigError(f"junk.json names {len(unknown)} queries groundtruth.json does not, "
                          f"e.g. {unknown[0]!r}")
    answers = {f for files in truth.values() for f in files}
    apart = set(truth) - answers  # queries taken apart from the database
    files = _image_files(images, root, confine) if images.is_dir() else {}
    database_paths = {str(p): p for n, p in {**files, **named}.items() if n not in apart}
    database = [_item(p, "") for _, p in sorted(database_paths.items())]
    queries = [
        EvalQuery(path=named[q], in_database=q not in apart,
                  relevant=frozenset(str(named[r]) for r in rel),
                  junk=frozenset(str(ignored[j]) for j in junk.get(q, ())) - {str(named[q])})
        for q, rel in sorted(truth.items())
    ]
    distractors = len(database) - len({str(named[n]) for n in named if n not in apart})
    junk_count = sum(len(q.junk) for q in queries)
    protocol = (
        f"instance: the database is every image under images/ but the queries taken apart "
        f"from it ({len(database)} images, {distractors} distractors the ground truth names "
        f"nowhere); {len(queries)} queries, {len(apart)} of them taken apart and searched by "
        "their bytes; "
        + (f"junk.json: {junk_count} junk answers removed from the rankings before scoring"
           if junk else "no junk.json"))
    return EvalDataset(root.name, "instance", database, queries, protocol)


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
