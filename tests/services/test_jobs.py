"""JobService against a real gRPC server on 127.0.0.1: ingest and evaluation jobs, their
progress and summaries, the job roots, one job per kind, cancellation and unknown ids."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from lookalike.app.compose import blobs_from, engine_from, store_from
from lookalike.app.jobs import job_runners_from
from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import InvalidArgument
from lookalike.core.settings import ServerSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.services.client import ClientError, Job, LookalikeClient
from lookalike.services.jobs import JobContext, JobRegistry, JobRunners
from lookalike.services.model_switch import ModelSwitch
from lookalike.services.remote_embedder import RemoteEmbedder
from lookalike.services.server import start_server
from tests.conftest import TEST_MODEL, encode, free_port, gradient_image

JOB_TIMEOUT_S = 120.0
BATCH = 4


@dataclass
class Served:
    settings: Settings
    store: MilvusVectorStore
    blobs: BlobStore
    embedder: Embedder
    root: Path
    client: LookalikeClient


@contextmanager
def serve(settings: Settings, store: MilvusVectorStore, blobs: BlobStore, embedder: Embedder,
          roots: Sequence[Path], runners: JobRunners | None = None,
          switch: ModelSwitch | None = None) -> Iterator[LookalikeClient]:
    """A server on 127.0.0.1 running jobs under `roots`, and a client of it; with `switch`, it
    follows its collection to the models roll-outs stage (as `lookalike serve` does)."""
    running = start_server(
        engine_from(settings, embedder, store, blobs, follower=switch),
        ServerSettings(host="127.0.0.1", port=0, job_roots=[str(r) for r in roots]),
        jobs=runners or job_runners_from(settings, embedder, store, blobs, switch),
    )
    try:
        with LookalikeClient(running.address, timeout_s=30) as client:
            yield client
    finally:
        running.stop(grace_s=5.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Served]:
    """An empty collection served with jobs allowed under one root; the pipeline batches 4."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("jobs-data"),
                        model=TEST_MODEL.model_copy(update={"batch_size": BATCH}))
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    root = tmp_path_factory.mktemp("job-root")
    with serve(settings, store, blobs, embedder, [root]) as client:
        yield Served(settings, store, blobs, embedder, root, client)


def wait_finished(client: LookalikeClient, job_id: str) -> Job:
    """The job once it has stopped."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running after {JOB_TIMEOUT_S} s: {job}")


def wait_until(client: LookalikeClient, job_id: str, done: int) -> Job:
    """The job once it has done at least `done` units."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.done >= done or job.finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {done} units: {job}")


def write_images(folder: Path, seeds: Sequence[int], prefix: str = "") -> list[Path]:
    """Small distinct JPEGs, one per seed."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}{seed:03d}.jpg" for seed in seeds]
    for path, seed in zip(paths, seeds, strict=True):
        path.write_bytes(encode(gradient_image(width=48, height=32, seed=seed)))
    return paths


@contextmanager
def gated_folder(folder: Path, seeds: Sequence[int]) -> Iterator[Path]:
    """Images of `seeds` in `folder`, the fifth of them a FIFO: reading it blocks the job's
    second batch until the yielded path is released with `release`."""
    paths = write_images(folder, seeds)
    gate = paths[BATCH]
    data = gate.read_bytes()
    gate.unlink()
    os.mkfifo(gate)
    try:
        yield gate
    finally:
        release(gate, data)


def release(gate: Path, data: bytes | None = None, timeout_s: float = 30.0) -> None:
    """Feed the FIFO's image to the job once it reads it (nothing if none does in time)."""
    if not gate.exists() or gate.is_file():
        return
    if data is None:
        data = encode(gradient_image(width=48, height=32, seed=int(gate.stem)))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    gate.unlink()
    gate.write_bytes(data)


def test_ingest_job_stores_the_folder_and_lists_every_bad_file(served: Served) -> None:
    """An ingest job adds each image once, reports each bad file with its reason, and a rerun
    adds nothing."""
    folder = served.root / "photos"
    write_images(folder / "cats", range(3))
    write_images(folder / "dogs", range(3, 6))
    (folder / "dogs" / "empty.jpg").write_bytes(b"")
    (folder / "dogs" / "notes.jpg").write_text("not an image at all")
    before = served.store.count()

    job = wait_finished(served.client, served.client.start_ingest(str(folder)).id)

    assert (job.kind, job.state, job.source) == ("ingest", "succeeded", str(folder.resolve()))
    assert job.ingest is not None
    assert (job.ingest.seen, job.ingest.added, job.ingest.already_stored) == (8, 6, 0)
    reasons = {Path(f.path).name: f.reason for f in job.ingest.failed}
    assert set(reasons) == {"empty.jpg", "notes.jpg"}
    assert all(reasons.values())
    assert (job.done, job.total) == (8, 8)
    assert job.finished_at >= job.started_at > 0
    assert served.store.count() == before + 6

    again = wait_finished(served.client, served.client.start_ingest(str(folder)).id)
    assert again.state == "succeeded"
    assert again.ingest is not None
    assert (again.ingest.added, again.ingest.already_stored) == (0, 6)
    assert served.store.count() == before + 6
    assert [j.id for j in served.client.list_jobs()][:2] == [again.id, job.id]


def test_sources_outside_the_job_roots_are_refused(
    served: Served, tmp_path: Path
) -> None:
    """Paths outside the roots, `..` escapes, links out and missing folders are refused at start."""
    outside = tmp_path / "outside"
    write_images(outside, [40])
    (served.root / "link-out").symlink_to(outside)
    refused = [str(outside), f"{served.root}/../{served.root.name}/../{tmp_path.name}/outside",
               str(served.root / "link-out"), "s3://bucket/images"]
    for source in refused:
        with pytest.raises(ClientError) as denied:
            served.client.start_ingest(source)
        assert denied.value.code == grpc.StatusCode.INVALID_ARGUMENT, source
        assert source in denied.value.message
        assert str(served.root) in denied.value.message
    with pytest.raises(ClientError) as evaluation:
        served.client.start_evaluation(str(outside))
    assert evaluation.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ClientError) as missing:
        served.client.start_ingest(str(served.root / "nowhere"))
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert "nowhere" in missing.value.message


def test_without_job_roots_and_with_a_remote_embedder_jobs_are_refused(
    served: Served, tmp_path: Path
) -> None:
    """No roots: FAILED_PRECONDITION naming the setting; a remote embedder refuses ingests."""
    with serve(served.settings, served.store, served.blobs, served.embedder, []) as client:
        with pytest.raises(ClientError) as no_roots:
            client.start_ingest(str(served.root))
        assert no_roots.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "LOOKALIKE_SERVER__JOB_ROOTS" in no_roots.value.message
    with LookalikeClient(f"127.0.0.1:{free_port()}") as unused:
        runners = job_runners_from(served.settings, RemoteEmbedder(unused), served.store,
                                   served.blobs)
        with serve(served.settings, served.store, served.blobs, served.embedder, [tmp_path],
                   runners) as client, pytest.raises(ClientError) as remote:
            client.start_ingest(str(tmp_path))
    assert remote.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "lookalike ingest" in remote.value.message


def test_a_second_job_of_the_same_kind_is_refused_while_one_runs(served: Served) -> None:
    """While an ingest job runs, another StartIngest is RESOURCE_EXHAUSTED naming the first."""
    with gated_folder(served.root / "busy", range(100, 110)) as gate:
        first = served.client.start_ingest(str(served.root / "busy"))
        with pytest.raises(ClientError) as busy:
            served.client.start_ingest(str(served.root / "busy"))
        assert busy.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert first.id in busy.value.message
        release(gate)
        done = wait_finished(served.client, first.id)
    assert done.state == "succeeded"
    assert done.ingest is not None
    assert done.ingest.added == 10


def test_cancel_stops_a_job_and_keeps_what_it_stored(served: Served) -> None:
    """A cancelled ingest stops after its batch in flight; the images it stored stay."""
    before = served.store.count()
    with gated_folder(served.root / "cancel", range(200, 220)) as gate:
        job = served.client.start_ingest(str(served.root / "cancel"))
        assert wait_until(served.client, job.id, BATCH).done == BATCH
        cancelling = served.client.cancel_job(job.id)
        assert cancelling.state == "running"
        release(gate)
        cancelled = wait_finished(served.client, job.id)
    assert cancelled.state == "cancelled"
    assert cancelled.ingest is not None
    # The first batch was stored, the second was in flight (blocked on the gate); no more.
    assert cancelled.ingest.added == 2 * BATCH
    assert (cancelled.done, cancelled.total) == (2 * BATCH, 20)
    assert served.store.count() == before + 2 * BATCH
    assert served.client.cancel_job(job.id).state == "cancelled"


def noisy_colour(rgb: tuple[int, int, int], seed: int) -> Image.Image:
    """A small image of one colour with noise: same colour, same class."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb, np.float32) + rng.normal(0, 20, (40, 40, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def test_evaluation_job_scores_a_labelled_folder(served: Served) -> None:
    """An evaluation job on <class>/<image> folders yields a baseline row with P@1, mAP and a
    P@K curve, its progress counting every image."""
    folder = served.root / "labelled"
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for c, (name, rgb) in enumerate(colours.items()):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            (folder / name / f"{i}.png").write_bytes(encode(noisy_colour(rgb, 10 * c + i), "PNG"))
    (folder / "red" / "README.txt").write_text("not an image")

    job = wait_finished(served.client, served.client.start_evaluation(str(folder)).id)

    assert (job.kind, job.state) == ("evaluate", "succeeded"), job.message
    assert job.evaluation is not None
    assert (job.evaluation.kind, job.evaluation.images, job.evaluation.queries) == ("class", 12, 12)
    [row] = job.evaluation.rows
    assert row.config == "baseline"
    assert row.scores["p@1"] >= 0.75
    assert 0.0 < row.scores["map"] <= 1.0
    assert len(row.pk_curve) == 12
    assert set(row.per_class_ap) == set(colours)
    assert (job.done, job.total) == (12, 12)


def test_unknown_job_is_not_found(served: Served) -> None:
    """GetJob and CancelJob of an id the server never gave are NOT_FOUND."""
    for call in (served.client.get_job, served.client.cancel_job):
        with pytest.raises(ClientError) as unknown:
            call("no-such-job")
        assert unknown.value.code == grpc.StatusCode.NOT_FOUND


def write_colour_classes(folder: Path, per_class: int = 16,
                         colours: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """<class>/<image> sub-folders of small noisy images, one colour per class (16 each: the
    fewest a training job takes, with half held out and two validation images)."""
    colours = colours or {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for c, (name, rgb) in enumerate(colours.items()):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            (folder / name / f"{i}.png").write_bytes(
                encode(noisy_colour(rgb, 100 * c + i), "PNG"))
    return folder


class SearchLoop:
    """Searches by image in a thread until told to stop, recording every failure."""

    def __init__(self, client: LookalikeClient, image: bytes) -> None:
        self.client = client
        self.image = image
        self.count = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._after = float("inf")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.search(image=self.image, top_k=3)
            except ClientError as exc:
                self.failures.append(f"{exc.code}: {exc.message}")
            self.count += 1
            if time.monotonic() > self._after:
                self._stop.set()

    def until_after(self, moment: float) -> None:
        """Stop after the first search that starts after `moment` (one across the swap)."""
        self._after = moment

    def __enter__(self) -> SearchLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(timeout=60)
        self._stop.set()


def test_training_and_rollout_refusals_say_what_is_wrong(served: Served, tmp_path: Path) -> None:
    """Training outside the roots, with an unknown loss, bits or backbone, an ensemble, or on too
    few images is INVALID_ARGUMENT; a roll-out of an unknown version is NOT_FOUND, one unconfirmed
    INVALID_ARGUMENT; nothing starts."""
    folder = write_colour_classes(served.root / "refusals")
    outside = write_colour_classes(tmp_path / "outside")
    one_class = write_colour_classes(served.root / "one-class", colours={"red": (220, 30, 30)})
    few = write_colour_classes(served.root / "few", per_class=3)
    jobs_before = len(served.client.list_jobs())
    refusals: list[tuple[tuple[str, dict[str, Any]], str]] = [
        ((str(outside), {}), "outside the job roots"),
        ((str(folder), {"loss": "softmax"}), "unknown loss 'softmax'"),
        ((str(folder), {"bits": 32}), "not 32"),
        ((str(folder), {"epochs": 10_000}), "epochs must lie between"),
        ((str(folder), {"backbone": "no_such_net"}), "unknown backbone 'no_such_net'"),
        ((str(folder), {"backbone": "efficientnet_lite0+mobilenet_v2"}),
         "fine-tuning takes one backbone"),
        ((str(one_class), {}), "at least 2 classes"),
        ((str(few), {}), "has 3 images"),
    ]
    for (source, options), reason in refusals:
        with pytest.raises(ClientError) as refused:
            served.client.start_training(source, **options)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT, (options, refused.value)
        assert reason in refused.value.message, refused.value.message

    with pytest.raises(ClientError) as unknown:
        served.client.start_rollout("v999", confirm=True)
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    assert "v999" in unknown.value.message
    with pytest.raises(ClientError) as unconfirmed:
        served.client.start_rollout("v1")
    assert unconfirmed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "confirm" in unconfirmed.value.message
    assert len(served.client.list_jobs()) == jobs_before


def test_training_job_compares_registers_and_rolls_out(
    tmp_path: Path, embedder: Embedder
) -> None:
    """A cancelled training run registers nothing; a 1-epoch run on 3 classes of 16 tiny images
    reports each epoch, the held-out comparison and the version it registered; rolling the
    collection out to that version re-indexes every image with the trained model, which the
    registry then lists as serving, while searches by image keep answering: the server follows
    the collection to the trained model with no restart and no failed search, and ingests with
    it afterwards."""
    settings = Settings(data_dir=tmp_path / "data", model=TEST_MODEL)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    root = tmp_path / "root"
    folder = write_colour_classes(root / "colours")
    with serve(settings, store, blobs, embedder, [root], switch=ModelSwitch()) as client:
        ingest = wait_finished(client, client.start_ingest(str(folder)).id)
        assert ingest.ingest is not None
        assert ingest.ingest.added == 48
        assert client.list_models() == []

        started = client.start_training(str(folder), epochs=5, backbone="mobilenet_v2")
        client.cancel_job(started.id)
        cancelled = wait_finished(client, started.id)
        assert cancelled.state == "cancelled", cancelled.message
        assert client.list_models() == []

        job = wait_finished(client, client.start_training(
            str(folder), epochs=1, backbone="mobilenet_v2").id)
        assert (job.kind, job.state, job.source) == ("train", "succeeded", str(folder)), job.message
        summary = job.training
        assert summary is not None
        assert (summary.dataset, summary.classes, summary.images) == ("colours", 3, 48)
        assert (summary.backbone, summary.loss, summary.bits) == ("mobilenet_v2", "hash", 48)
        assert [e.epoch for e in summary.epochs] == [0, 1]
        assert np.isfinite(summary.epochs[1].train_loss)
        assert all(0.0 <= e.val_map <= 1.0 for e in summary.epochs)
        for score in (summary.pretrained_map, summary.finetuned_map, summary.hashed_map,
                      summary.float_map):
            assert score is not None
            assert 0.0 <= score <= 1.0
        assert summary.comparison["finetuned.map"] == summary.finetuned_map
        assert summary.version == "v1"
        assert "registered as v1" in job.message
        assert (job.done, job.total) == (1, 1)

        [model] = client.list_models()
        assert (model.version, model.backbone, model.loss, model.bits) == (
            "v1", "mobilenet_v2", "hash", 48)
        assert model.weights_id.startswith("sha256:")
        assert model.metrics["finetuned_map"] == summary.finetuned_map
        assert model.trained_on.startswith("colours (3 classes")
        assert model.size_bytes > 0
        assert not model.serving

        query = (folder / "red" / "0.png").read_bytes()
        searches = SearchLoop(client, query)
        with searches:
            rollout = wait_finished(client, client.start_rollout("v1", confirm=True).id)
            searches.until_after(time.monotonic())
        assert (rollout.kind, rollout.state, rollout.source) == ("rollout", "succeeded", "v1"), \
            rollout.message
        assert (rollout.done, rollout.total) == (48, 48)
        assert [m.serving for m in client.list_models()] == [True]
        assert store.live_spec()["weights"] == model.weights_id
        assert "This server embeds with it now" in rollout.message
        assert "LOOKALIKE_MODEL__WEIGHTS=" in rollout.message
        assert searches.failures == []
        assert searches.count >= 2
        # The query image is stored: the trained model finds it first, as the old one did.
        after = client.search(image=query, top_k=3)
        assert after.hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert after.hits[0].source.endswith("red/0.png")
        write_images(root / "late", [900, 901])
        late = wait_finished(client, client.start_ingest(str(root / "late")).id)
        assert late.state == "succeeded", late.message
        assert late.ingest is not None
        assert late.ingest.added == 2
        assert store.count() == 50
        assert store.live_spec()["weights"] == model.weights_id
        with pytest.raises(ClientError) as again:
            client.start_rollout("v1", confirm=True)
        assert again.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "already serves v1" in again.value.message


def test_a_job_that_cannot_stop_part_way_refuses_cancel() -> None:
    """Cancelling a running job started with a refusal (a roll-out) is INVALID_ARGUMENT with
    that reason, and the job runs on to succeed."""
    registry = JobRegistry()
    release = threading.Event()

    def work(job: JobContext) -> None:
        release.wait(JOB_TIMEOUT_S)

    job = registry.start("rollout", "v1", work, cancel_refusal="cannot stop part way")
    with pytest.raises(InvalidArgument, match="cannot stop part way"):
        registry.cancel(job.id)
    release.set()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while registry.get(job.id).state in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert registry.get(job.id).state == "succeeded"
