"""`lookalike eval`: retrieval quality on a labelled dataset, per configuration of the quality
levers (on cached descriptors) or end to end (ingest, then search over gRPC)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookalike.cli.runner import EXIT_OK

if TYPE_CHECKING:
    from lookalike.core.settings import Settings
    from lookalike.evaluation.datasets import EvalDataset

DEFAULT_CONFIGS = ("baseline",)


class _DatasetAction(argparse.Action):
    """The dataset argument. `--config` takes one or more names, so in `eval --config best
    DATASET` it takes the dataset too (argparse never gives an option's values back); the
    dataset is then the last of them."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: str | Sequence[Any] | None, option_string: str | None = None,
    ) -> None:
        if values is None:
            configs = list(getattr(namespace, "config", None) or [])
            if len(configs) < 2:
                parser.error(f"the following arguments are required: {self.dest}")
            values = configs.pop()
            namespace.config = configs
        setattr(namespace, self.dest, values)


class _UsageFormatter(argparse.HelpFormatter):
    """Shows the dataset as the required argument it is, not as `[dataset]`."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if isinstance(action, _DatasetAction):
            return default_metavar
        return super()._format_args(action, default_metavar)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `eval`."""
    evaluate = commands.add_parser("eval", help="evaluate retrieval on a labelled dataset",
                                   formatter_class=_UsageFormatter)
    evaluate.add_argument("dataset", nargs="?", action=_DatasetAction,
                          help="dataset folder: labels.json, groundtruth.json or "
                               "<class>/<image> folders")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object per configuration")
    evaluate.add_argument("--config", nargs="+", action="extend",
                          help="configurations to run: a search profile (fast, balanced, "
                               "instance) or the ablation's (e.g. baseline, best, +dba; see "
                               "--ablation); best is the best for the dataset's kind; "
                               "several: list them, separate them by commas or repeat --config")
    evaluate.add_argument("--ablation", action="store_true",
                          help="run each lever on and off (baseline, each lever, best, best minus each)")
    evaluate.add_argument("--plot", help="write the P@K curve of each configuration to this PNG")
    evaluate.add_argument("--latency", type=int, default=0, metavar="N",
                          help="also time N queries given as image bytes, per configuration")
    evaluate.add_argument("--no-ann", action="store_true",
                          help="skip the ANN index's recall@K against exact search")
    evaluate.add_argument("--e2e", action="store_true",
                          help="evaluate the whole path instead: ingest, then search over gRPC")
    evaluate.add_argument("--collection", help="with --e2e: collection name (default: per dataset "
                                               "and model)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=cmd_eval)


def config_names(given: Sequence[str] | None) -> list[str]:
    """The configuration names `--config` asked for, commas split; the baseline when none."""
    names = [name for value in given or () for name in value.split(",") if name]
    return names or list(DEFAULT_CONFIGS)


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate retrieval on a labelled dataset: configurations of the quality levers on cached
    descriptors, or (--e2e) the whole ingest and gRPC search path."""
    from lookalike.evaluation.datasets import load_dataset

    # The user's own files: a dataset made of links to photos elsewhere is fine here.
    dataset = load_dataset(Path(args.dataset), confine=False)
    if args.e2e:
        return _eval_end_to_end(settings, args, dataset)
    from lookalike.app.jobs import eval_env_from
    from lookalike.evaluation.configs import ablation, preset
    from lookalike.evaluation.suite import iter_evaluate

    configs = (ablation(dataset.kind) if args.ablation
               else [preset(name, dataset.kind) for name in config_names(args.config)])
    env = eval_env_from(settings, ann=not args.no_ann, latency_queries=args.latency,
                        progress=not args.no_progress)
    if not args.json:
        print(f"{dataset.name}: {dataset.protocol}", flush=True)
    results = []
    for result in iter_evaluate(dataset, configs, env):
        results.append(result)
        out = result.as_json()
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            print(f"{out['config']:>16}  P@10 {out['p@10']:.4f}  mAP {out['map']:.4f}  "
                  f"NDCG@10 {out['ndcg@10']:.4f}  {out['levers']}", flush=True)
    if args.plot:
        from lookalike.evaluation.plot import plot_pk

        plot_pk(results, Path(args.plot), f"{dataset.name}: precision at K")
    return EXIT_OK


def _eval_end_to_end(settings: Settings, args: argparse.Namespace, dataset: EvalDataset) -> int:
    from lookalike.app.compose import blobs_from, embedder_from, pipeline_from, store_from
    from lookalike.evaluation.runner import eval_collection_name, evaluate

    if not settings.milvus.uri:
        # Its own Milvus Lite file, so an evaluation can run beside `lookalike serve`.
        settings = settings.model_copy(update={"data_dir": settings.data_dir / "eval"})
    embedder = embedder_from(settings)
    collection = args.collection or eval_collection_name(dataset.name, embedder.spec.to_dict())
    store = store_from(settings, embedder, collection)
    blobs = blobs_from(settings)
    pipeline = pipeline_from(settings, embedder, store, blobs)
    result = evaluate(dataset, embedder, store, blobs, pipeline, progress=not args.no_progress)
    out = result.as_json()
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>20}: {value}")
    return EXIT_OK
