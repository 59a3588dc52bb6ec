"""`lookalike bench verify`: how local features and the early stop were chosen for verification.

On dvd_covers (phone photos of DVD covers against the cover scans) every query is verified
against the database in the global descriptor's order, as a search verifies its top 100, with
the product's own functions (`features_of`, `matching.count_inliers`). The grid (image side,
keypoints, early stop) is scored on one camera's photos (`--choose-on`, Palm by default: the
harder of the two) and reported on the other camera's, which played no part in the choice:
the most queries right, ties to the cheaper, within `--budget-ms` added per query (median).
Timings are per query on this machine: extracting the query's features plus matching.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from bench.machine import describe_machine

if TYPE_CHECKING:
    from lookalike.core.settings import Settings
    from lookalike.embedder.local_features import LocalFeatures
    from lookalike.embedder.runtime import Embedder

SIDES = (480, 640)
KEYPOINTS = (500, 1000)
CONFIDENT = (0, 40, 60)
MIN_INLIERS = 12


@dataclass(frozen=True, slots=True)
class Row:
    """One point of the grid on one camera's queries."""

    side: int
    keypoints: int
    confident: int
    camera: str
    top1: float
    median_ms: float
    p95_ms: float


def _features(paths: Sequence[Path], side: int, keypoints: int,
              max_pixels: int) -> tuple[list[LocalFeatures], list[float]]:
    """Each image's features and the seconds each took (decode included)."""
    from lookalike.embedder.local_features import LocalFeatureConfig, features_of

    config = LocalFeatureConfig(max_features=keypoints, max_side=side)

    def one(path: Path) -> tuple[LocalFeatures, float]:
        data = path.read_bytes()
        started = time.perf_counter()
        return features_of(data, max_pixels, config), time.perf_counter() - started

    with ThreadPoolExecutor(1) as pool:
        done = list(pool.map(one, paths))
    return [f for f, _ in done], [s for _, s in done]


def _vectors(embedder: Embedder, paths: Sequence[Path]) -> NDArray[np.float32]:
    """The global descriptors of `paths`, N x D."""
    outcomes = embedder.embed_bytes([p.read_bytes() for p in paths])
    for path, outcome in zip(paths, outcomes, strict=True):
        if outcome.vector is None:
            raise SystemExit(f"{path}: {outcome.error}")
    return np.stack([np.asarray(o.vector, dtype=np.float32) for o in outcomes])


def choose(rows: Sequence[Row], camera: str, budget_ms: float) -> Row:
    """On `camera`: the most queries right within the budget, ties to the faster."""
    fits = [r for r in rows if r.camera == camera and r.median_ms <= budget_ms]
    if not fits:
        raise SystemExit(f"no configuration fits {budget_ms} ms on {camera}")
    return max(fits, key=lambda r: (r.top1, -r.median_ms))


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Score the grid on both cameras' queries, choose on one, report on the other."""
    from lookalike.app.compose import embedder_from
    from lookalike.embedder.local_features import LocalFeatureConfig
    from lookalike.embedder.matching import VerifyPolicy, count_inliers

    images = args.dataset / "images"
    db_paths = sorted(images.glob("ref_*"))
    embedder = embedder_from(settings)
    embedder.load()
    db_vectors = _vectors(embedder, db_paths)
    rows: list[Row] = []
    for side, keypoints in itertools.product(SIDES, KEYPOINTS):
        db_features, _ = _features(db_paths, side, keypoints, settings.model.max_pixels)
        config = LocalFeatureConfig(max_features=keypoints, max_side=side)
        for camera in ("e63", "palm"):
            q_paths = sorted(images.glob(f"{camera}_*"))
            q_features, extract_s = _features(q_paths, side, keypoints, settings.model.max_pixels)
            q_vectors = _vectors(embedder, q_paths)
            for confident in CONFIDENT:
                policy = VerifyPolicy(MIN_INLIERS, confident)
                right, seconds = 0, []
                for path, features, vector, extract in zip(q_paths, q_features, q_vectors,
                                                           extract_s, strict=True):
                    order = np.argsort(-(db_vectors @ vector), kind="stable")
                    started = time.perf_counter()
                    counts = count_inliers(features, [db_features[i] for i in order], config,
                                           policy)
                    seconds.append(extract + time.perf_counter() - started)
                    best = int(np.argmax(counts))
                    wanted = "ref_" + path.name.split("_", 1)[1]
                    right += counts[best] >= MIN_INLIERS and db_paths[order[best]].name == wanted
                ms = sorted(s * 1000.0 for s in seconds)
                row = Row(side, keypoints, confident, camera, right / len(q_paths),
                          statistics.median(ms), ms[int(0.95 * (len(ms) - 1))])
                rows.append(row)
                print(json.dumps(asdict(row)), flush=True)
    chosen = choose(rows, args.choose_on, args.budget_ms)
    other = next(c for c in ("e63", "palm") if c != args.choose_on)
    print(f"Command: `{args.command_line}`  \nMachine: {describe_machine()}\n")
    print("| side px | keypoints | early stop at | camera | top-1 | ms median | ms p95 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " **chosen**" if (r.side, r.keypoints, r.confident) == (
            chosen.side, chosen.keypoints, chosen.confident) else ""
        print(f"| {r.side} | {r.keypoints} | {r.confident or 'off'} | {r.camera}{mark} "
              f"| {r.top1:.3f} | {r.median_ms:.1f} | {r.p95_ms:.1f} |")
    held = next(r for r in rows if r.camera == other and (r.side, r.keypoints, r.confident)
                == (chosen.side, chosen.keypoints, chosen.confident))
    print(f"\nchosen on {args.choose_on} within {args.budget_ms:g} ms: side {chosen.side}, "
          f"{chosen.keypoints} keypoints, early stop {chosen.confident or 'off'} "
          f"(top-1 {chosen.top1:.3f}); on {other}, not used to choose: top-1 {held.top1:.3f}, "
          f"{held.median_ms:.1f} ms median")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `verify`."""
    verify = commands.add_parser("verify", help="choose verification's local features and early "
                                 "stop on one camera's photos of dvd_covers, report on the other")
    verify.add_argument("--dataset", type=Path, default=Path("../shared/datasets/dvd_covers"))
    verify.add_argument("--choose-on", choices=("e63", "palm"), default="palm")
    verify.add_argument("--budget-ms", type=float, default=150.0)
    verify.set_defaults(func=run)
