"""`lookalike bench presets`: the category presets chosen honestly, leave one set out.

Every candidate of a grid of levers (backbone, class posteriors, DBA, alpha-QE) is scored on
every class set. For each set, the preset is picked on the other sets only (highest mAP there)
and reported on the held-out set beside the baseline, so no reported number chose its own
configuration. `balanced` picks among single-model candidates (the baseline's embedding cost),
`quality` among all (the ensemble embeds with three networks). A preset is fit to be a default
only if it beats the baseline on every set it was not chosen on.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.eval import find_datasets
from bench.machine import describe_machine
from lookalike.core.profiles import ENSEMBLE
from lookalike.evaluation.configs import BASELINE, EvalConfig

if TYPE_CHECKING:
    from lookalike.core.settings import Settings

SEMANTIC = (0.0, 0.5, 1.0)
DBA_K = (0, 10, 30)
QE_N = (0, 10, 20)
BACKBONES = (BASELINE.backbone, ENSEMBLE)


def grid() -> list[EvalConfig]:
    """The candidates: each backbone with every mix of class posteriors, DBA and alpha-QE."""
    out = []
    for backbone, weight, dba_k, qe_n in itertools.product(BACKBONES, SEMANTIC, DBA_K, QE_N):
        short = "ens" if backbone == ENSEMBLE else "lite0"
        out.append(replace(BASELINE, name=f"{short}-s{weight:g}-dba{dba_k}-qe{qe_n}",
                           backbone=backbone, semantic_weight=weight, dba_k=dba_k,
                           dba_alpha=3.0, qe_n=qe_n, qe_alpha=3.0))
    return out


@dataclass(frozen=True, slots=True)
class Score:
    """One candidate on one set."""

    config: str
    dataset: str
    p10: float
    map: float
    p1: float = 0.0


@dataclass(frozen=True, slots=True)
class HeldOut:
    """A preset picked without `dataset`, and how it and the baseline do there."""

    preset: str
    dataset: str
    chosen: str
    chosen_on: tuple[str, ...]
    p10: float
    map: float
    baseline_p10: float
    baseline_map: float
    p1: float = 0.0
    baseline_p1: float = 0.0

    @property
    def beats_baseline(self) -> bool:
        """Better mAP and no worse P@10 than the baseline on the held-out set."""
        return self.map > self.baseline_map and self.p10 >= self.baseline_p10


def choose(scores: Sequence[Score], candidates: Sequence[str], sets: Sequence[str]) -> str:
    """The candidate with the highest mean mAP over `sets` (ties: the earlier candidate)."""
    def mean_map(name: str) -> float:
        found = [s.map for s in scores if s.config == name and s.dataset in sets]
        return sum(found) / len(found)
    return max(candidates, key=mean_map)


def leave_one_out(scores: Sequence[Score], presets: dict[str, list[str]],
                  baseline: str) -> list[HeldOut]:
    """For every preset and set: chosen on the other sets, scored on this one."""
    sets = sorted({s.dataset for s in scores})
    at = {(s.config, s.dataset): s for s in scores}
    out = []
    for preset, candidates in presets.items():
        for held in sets:
            others = tuple(s for s in sets if s != held)
            chosen = choose(scores, candidates, others)
            mine, base = at[(chosen, held)], at[(baseline, held)]
            out.append(HeldOut(preset, held, chosen, others, mine.p10, mine.map, base.p10,
                               base.map, mine.p1, base.p1))
    return out


def render(rows: Sequence[HeldOut], command: str) -> str:
    """The leave-one-set-out table as markdown."""
    lines = [f"Command: `{command}`  ", f"Machine: {describe_machine()}", "",
             "| preset | held-out set | chosen on | chosen config | P@1 | P@10 | mAP "
             "| baseline P@1 | baseline P@10 | baseline mAP | beats baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.preset} | {r.dataset} | {', '.join(r.chosen_on)} | {r.chosen} "
                     f"| {r.p1:.4f} | {r.p10:.4f} | {r.map:.4f} | {r.baseline_p1:.4f} "
                     f"| {r.baseline_p10:.4f} | {r.baseline_map:.4f} "
                     f"| {'yes' if r.beats_baseline else '**no**'} |")
    return "\n".join(lines)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Score the grid on every class set, then print the leave-one-set-out table."""
    from lookalike.app.jobs import eval_env_from
    from lookalike.evaluation.datasets import load_dataset
    from lookalike.evaluation.suite import iter_evaluate

    env = eval_env_from(settings, ann=False, progress=not args.no_progress)
    candidates = [BASELINE, *grid()]
    scores: list[Score] = []
    for path in find_datasets(args.datasets):
        dataset = load_dataset(path)
        if dataset.kind != "class":
            continue
        for result in iter_evaluate(dataset, candidates, env):
            row = result.as_json()
            scores.append(Score(result.config.name, dataset.name, row["p@10"], row["map"],
                                row["p@1"]))
            print(json.dumps({"dataset": dataset.name, "config": result.config.name,
                              "levers": result.config.levers(), "p@1": row["p@1"],
                              "p@10": row["p@10"], "map": row["map"]}), flush=True)
    single = [c.name for c in candidates if c.backbone == BASELINE.backbone]
    rows = leave_one_out(scores, {"balanced": single, "quality": [c.name for c in candidates]},
                         BASELINE.name)
    print(render(rows, args.command_line))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `presets`."""
    presets = commands.add_parser("presets", help="choose the category presets leave one set "
                                  "out and report each on the set it was not chosen on")
    presets.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    presets.add_argument("--no-progress", action="store_true")
    presets.set_defaults(func=run)
