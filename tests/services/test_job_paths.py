"""The path policy over a real gRPC server with job roots: every way a request can name a file
outside the roots (as a job's source, or inside a dataset's manifest) is INVALID_ARGUMENT, reads
the same whether the outside file exists or not, and opens nothing outside."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from lookalike.app.compose import blobs_from, store_from
from lookalike.core.settings import Settings
from lookalike.embedder.runtime import Embedder
from lookalike.services.client import ClientError, LookalikeClient
from tests.conftest import TEST_MODEL
from tests.services.test_jobs import serve, wait_finished, write_colour_classes, write_images

_AUDITED = ("open", "os.listdir", "os.scandir")


class OpenRecorder:
    """Every path this process opens or lists while recording (a Python audit hook: the
    server runs in this process, so its job threads are seen too)."""

    def __init__(self) -> None:
        self.recording = False
        self.paths: list[str] = []
        self._lock = threading.Lock()
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording or event not in _AUDITED or not args:
            return
        path = args[0]
        if isinstance(path, str | bytes | os.PathLike):
            with self._lock:
                self.paths.append(os.path.abspath(os.fsdecode(path)))

    @contextmanager
    def watching(self) -> Iterator[list[str]]:
        """Record while the block runs; yields the list the paths go to."""
        with self._lock:
            self.paths = []
        self.recording = True
        try:
            yield self.paths
        finally:
            self.recording = False


@pytest.fixture(scope="module")
def recorder() -> OpenRecorder:
    """One audit hook for the module (hooks cannot be removed, so it records only on demand)."""
    return OpenRecorder()


@dataclass
class Site:
    """A served collection with one job root, and a folder outside it holding a real image, a
    text file and a file the requests name but that does not exist."""

    root: Path
    outside: Path
    client: LookalikeClient

    @property
    def secret(self) -> Path:
        """A real image outside the roots."""
        return self.outside / "secret.jpg"

    @property
    def absent(self) -> Path:
        """A name outside the roots where nothing exists."""
        return self.outside / "absent.jpg"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Site]:
    """The server (jobs under one root) and the outside folder."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("paths-data"), model=TEST_MODEL)
    root = tmp_path_factory.mktemp("root")
    outside = tmp_path_factory.mktemp("outside")
    write_images(outside, [7], prefix="secret-")
    (outside / "secret-007.jpg").rename(outside / "secret.jpg")
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    write_colour_classes(outside / "classes")
    store = store_from(settings, embedder)
    with serve(settings, store, blobs_from(settings), embedder, [root]) as client:
        yield Site(root, outside, client)


def _outside_opened(paths: list[str], outside: Path) -> list[str]:
    real = os.path.realpath(outside)
    return [p for p in paths if p == real or p.startswith(real + os.sep)
            or os.path.realpath(p).startswith(real + os.sep)]


def refused(site: Site, recorder: OpenRecorder, start: Callable[[], object]) -> str:
    """The message of a start that must be INVALID_ARGUMENT without opening anything outside."""
    with recorder.watching() as opened, pytest.raises(ClientError) as denied:
        start()
    assert denied.value.code == grpc.StatusCode.INVALID_ARGUMENT, denied.value
    assert _outside_opened(opened, site.outside) == []
    return denied.value.message


def _starts(site: Site, source: str) -> dict[str, Callable[[], object]]:
    return {"ingest": lambda: site.client.start_ingest(source),
            "evaluation": lambda: site.client.start_evaluation(source),
            "training": lambda: site.client.start_training(source)}


def test_the_recorder_sees_an_outside_open(site: Site, recorder: OpenRecorder) -> None:
    """The check can fail: reading an outside file while recording is caught."""
    with recorder.watching() as opened:
        site.secret.read_bytes()
    assert _outside_opened(opened, site.outside) == [str(site.secret)]


def _sources(site: Site) -> dict[str, str]:
    (site.root / "dir-link").symlink_to(site.outside / "classes")
    (site.root / "file-link.jpg").symlink_to(site.secret)
    return {
        "absolute": str(site.outside / "classes"),
        "dot-dot": f"{site.root}/../{site.outside.name}/classes",
        "linked folder": str(site.root / "dir-link"),
        "linked file": str(site.root / "file-link.jpg"),
        "/proc/self/root": f"/proc/self/root{site.outside / 'classes'}",
        "/proc/self/cwd": "/proc/self/cwd",
        "NUL byte": f"{site.root}/a\x00b",
        "over-long name": f"{site.root}/{'n' * 300}",
        "over-long path": f"{site.root}/" + "/".join(["d" * 200] * 25),
        "file://": f"file://{site.outside / 'classes'}",
        "unknown user's home": "~no-such-user-here/photos",
        "pattern": f"{site.root}/*",
    }


def test_sources_outside_the_roots_are_refused_by_every_job(
    site: Site, recorder: OpenRecorder
) -> None:
    """Every form of outside or malformed source is INVALID_ARGUMENT for ingest, evaluation and
    training, and nothing outside is opened or listed."""
    for case, source in _sources(site).items():
        for kind, start in _starts(site, source).items():
            message = refused(site, recorder, start)
            assert message, (case, kind)
            assert "\x00" not in message, (case, kind)
            assert len(message) < 1000, (case, kind, message)


def test_an_outside_path_reads_the_same_whether_it_exists_or_not(
    site: Site, recorder: OpenRecorder
) -> None:
    """No existence oracle: the refusals of an existing and a missing outside file differ only
    by the name the request gave."""
    for kind in ("ingest", "evaluation", "training"):
        there = refused(site, recorder, _starts(site, str(site.secret))[kind])
        absent = refused(site, recorder, _starts(site, str(site.absent))[kind])
        assert there.replace("secret", "absent") == absent, kind


def _class_set(folder: Path, entries: dict[str, list[str]] | None = None) -> Path:
    """A class-layout dataset (images/<class>/<file>, labels.json) of two real classes, with
    `entries` added to labels.json."""
    classes = write_colour_classes(folder / "images")
    labels = {c.name: sorted(f.name for f in c.iterdir()) for c in sorted(classes.iterdir())}
    for cls, names in (entries or {}).items():
        labels.setdefault(cls, []).extend(names)
    (folder / "labels.json").write_text(json.dumps(labels))
    return folder


def _instance_set(folder: Path, truth_extra: dict[str, list[str]]) -> Path:
    """An instance-layout dataset (images/<file>, groundtruth.json) with extra entries."""
    write_images(folder / "images", range(4))
    truth = {"000.jpg": ["001.jpg"], "002.jpg": ["003.jpg"], **truth_extra}
    (folder / "groundtruth.json").write_text(json.dumps(truth))
    return folder


def _manifest_cases(site: Site, base: Path) -> dict[str, Path]:
    """One dataset folder inside the root per way a manifest (or a layout) can point outside."""
    secret, absent = str(site.secret), str(site.absent)
    escape = f"../../../../{site.outside.name}/secret.jpg"
    proc = f"/proc/self/root{secret}"
    cases = {
        "class: absolute entry": _class_set(base / "c1", {"red": [secret]}),
        "class: absolute missing entry": _class_set(base / "c2", {"red": [absent]}),
        "class: dot-dot entry": _class_set(base / "c3", {"red": [escape]}),
        "class: dot-dot class": _class_set(base / "c4", {f"../../{site.outside.name}": ["secret.jpg"]}),
        "class: /proc/self/root entry": _class_set(base / "c5", {"red": [proc]}),
        "class: NUL entry": _class_set(base / "c6", {"red": ["a\x00.jpg"]}),
        "class: over-long entry": _class_set(base / "c7", {"red": ["x" * 300 + ".jpg"]}),
        "class: file:// entry": _class_set(base / "c8", {"red": [f"file://{secret}"]}),
        "class: text file entry": _class_set(base / "c9", {"red": ["notes.txt"]}),
        "class: entry not a string": _class_set(base / "c10"),
        "instance: absolute query": _instance_set(base / "i1", {secret: ["001.jpg"]}),
        "instance: dot-dot answer": _instance_set(base / "i2", {"000.jpg": ["../../x.jpg"]}),
        "instance: /proc/self/root answer": _instance_set(base / "i3", {"001.jpg": [proc]}),
    }
    (cases["class: text file entry"] / "images" / "red" / "notes.txt").write_text("notes")
    labels = cases["class: entry not a string"] / "labels.json"
    labels.write_text(labels.read_text().replace('"0.png"', "17"))
    linked = _class_set(base / "c11")
    (linked / "images" / "red" / "x.png").symlink_to(site.secret)
    (linked / "labels.json").write_text(json.dumps({
        **json.loads((linked / "labels.json").read_text()),
        "red": sorted(p.name for p in (linked / "images" / "red").iterdir())}))
    cases["class: linked file"] = linked
    linked_dir = _class_set(base / "c12", {"out": ["0.png"]})
    (linked_dir / "images" / "out").symlink_to(site.outside / "classes" / "red")
    cases["class: linked class folder"] = linked_dir
    linked_images = base / "c13"
    linked_images.mkdir()
    (linked_images / "images").symlink_to(site.outside / "classes")
    (linked_images / "labels.json").write_text(json.dumps({"red": ["0.png"], "blue": ["0.png"]}))
    cases["class: linked images folder"] = linked_images
    plain_file = write_colour_classes(base / "p1")
    (plain_file / "red" / "link.png").symlink_to(site.outside / "classes" / "red" / "0.png")
    cases["folder: linked file"] = plain_file
    plain_dir = write_colour_classes(base / "p2")
    (plain_dir / "stolen").symlink_to(site.outside / "classes" / "green")
    cases["folder: linked class folder"] = plain_dir
    instance_link = _instance_set(base / "i4", {})
    (instance_link / "images" / "001.jpg").unlink()
    (instance_link / "images" / "001.jpg").symlink_to(site.secret)
    cases["instance: linked file"] = instance_link
    return cases


def test_manifests_naming_files_outside_their_folder_are_refused(
    site: Site, recorder: OpenRecorder
) -> None:
    """In every dataset kind, an entry or layout that leads outside the dataset folder (absolute,
    `..`, /proc/self/root, links to files and folders), a malformed entry (NUL, over-long, not a
    string, not an image name) is INVALID_ARGUMENT for evaluation and training, and nothing
    outside is opened or listed."""
    cases = _manifest_cases(site, site.root / "sets")
    for case, folder in cases.items():
        starts = _starts(site, str(folder))
        kinds = ("evaluation", "training") if case.startswith(("class", "folder")) \
            else ("evaluation",)
        for kind in kinds:
            message = refused(site, recorder, starts[kind])
            if "linked" in case:  # where a link leads is not the caller's to learn
                assert str(site.outside) not in message, (case, kind, message)


def test_an_existing_and_a_missing_outside_entry_read_the_same(
    site: Site, recorder: OpenRecorder
) -> None:
    """The manifest's refusal does not tell whether the outside file exists."""
    base = site.root / "oracle"
    there = _class_set(base / "there", {"red": [str(site.secret)]})
    absent = _class_set(base / "absent", {"red": [str(site.absent)]})
    for kind in ("evaluation", "training"):
        first = refused(site, recorder, _starts(site, str(there))[kind])
        second = refused(site, recorder, _starts(site, str(absent))[kind])
        assert first.replace("secret", "absent") == second, kind


def test_a_dataset_inside_its_folder_still_evaluates(site: Site) -> None:
    """The policy refuses only what leads out: links that stay inside the dataset are fine."""
    folder = _class_set(site.root / "inside")
    (folder / "images" / "red" / "again.png").symlink_to(folder / "images" / "red" / "1.png")
    labels = json.loads((folder / "labels.json").read_text())
    labels["red"].append("again.png")
    (folder / "labels.json").write_text(json.dumps(labels))
    job = wait_finished(site.client, site.client.start_evaluation(str(folder)).id)
    assert job.state == "succeeded", job.message
    assert job.evaluation is not None
    assert job.evaluation.images == 3 * 16 + 1
