"""`lookalike train`: fine-tune a backbone on a labelled folder, optionally into the registry."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_OK
from lookalike.embedder.losses import DEFAULT_LOSS, LOSSES

if TYPE_CHECKING:
    from lookalike.core.settings import Settings
    from lookalike.embedder.training import EpochLog


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `train`."""
    training = commands.add_parser("train", help="fine-tune a backbone on a labelled folder")
    training.add_argument("dataset", help="labelled folder: labels.json or <class>/<image> folders")
    training.add_argument("--loss", choices=LOSSES, default=DEFAULT_LOSS,
                          help="hash: classifier on a sigmoid latent layer of --bits bits (its "
                               "codes serve hash_rerank); triplet (batch-hard) or arcface")
    training.add_argument("--bits", type=int, choices=(48, 64, 128, 256), default=48)
    training.add_argument("--epochs", type=int, default=10)
    training.add_argument("--batch-size", type=int, default=32)
    training.add_argument("--lr", type=float, default=1e-4,
                          help="backbone learning rate (the new heads learn 10x faster)")
    training.add_argument("--freeze", type=float, default=0.5,
                          help="fraction of the backbone's parameters, input side, kept frozen")
    training.add_argument("--patience", type=int, default=3,
                          help="stop after this many epochs without a better validation mAP")
    training.add_argument("--views", type=int, default=4,
                          help="augmented views per image cached past the frozen layers")
    training.add_argument("--val-fraction", type=float, default=0.2)
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--backbone", help="backbone name (default: settings' model.backbone)")
    training.add_argument("--weights", help="start from this weights file")
    training.add_argument("--out", help="artefact folder (default: <data_dir>/training/...)")
    training.add_argument("--protocol", choices=("all", "half"), default="all",
                          help="half: train on half of each class, then compare pretrained and "
                               "fine-tuned on the held-out half")
    training.add_argument("--register", action="store_true",
                          help="store the model in the registry (lookalike models list)")
    training.add_argument("--json", action="store_true", help="print the results as JSON")
    training.add_argument("--no-progress", action="store_true")
    training.set_defaults(func=cmd_train)


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    """Fine-tune a backbone on a labelled folder; with --protocol half also compare it with the
    pretrained model on the held-out half; with --register store it in the model registry."""
    from tqdm import tqdm

    from lookalike.embedder.training import TrainConfig
    from lookalike.training.data import labelled_images
    from lookalike.training.run import TrainOptions

    options = TrainOptions(
        train=TrainConfig(loss=args.loss, bits=args.bits, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, freeze=args.freeze,
                          patience=args.patience, seed=args.seed, views=args.views),
        val_fraction=args.val_fraction, backbone=args.backbone or "",
        weights=Path(args.weights) if args.weights else None, protocol=args.protocol,
    )
    # The user's own files: links may lead anywhere (a server's training jobs are confined).
    dataset = labelled_images(Path(args.dataset), confine=False)
    out_dir = Path(args.out) if args.out else (
        settings.data_dir / "training" / f"{dataset.root.name}-{args.loss}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}")
    bar = tqdm(total=args.epochs, unit="epoch", desc="training", disable=args.no_progress,
               dynamic_ncols=True, file=sys.stderr)

    def on_epoch(log: EpochLog) -> None:
        if log.epoch:
            bar.update(1)
        bar.set_postfix(loss=f"{log.train_loss:.4f}", val_map=f"{log.val_map:.4f}")

    from lookalike.app.compose import blobs_from
    from lookalike.app.training import TrainHooks, train_and_register
    from lookalike.core.model_registry import ModelRegistry

    registry = ModelRegistry(blobs_from(settings)) if args.register else None
    try:
        run = train_and_register(
            settings, dataset, options, out_dir=out_dir, registry=registry,
            hooks=TrainHooks(on_epoch=on_epoch, on_trained=lambda _: bar.close()))
    finally:
        bar.close()
    outcome, report = run.outcome, run.report
    if run.version is not None:
        report["registered_version"] = run.version.version
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"trained {outcome.spec['backbone']} ({args.loss}) in {outcome.seconds:.0f} s: best epoch "
          f"{outcome.metrics['best_epoch']}, validation mAP {outcome.metrics['initial_val_map']:.4f} "
          f"-> {outcome.metrics['best_val_map']:.4f}; artefacts in {outcome.out_dir}")
    if args.protocol == "half":
        print(f"held-out half: mAP pretrained {report['pretrained']['map']:.4f} "
              f"fine-tuned {report['finetuned']['map']:.4f}")
        if "hash" in report:
            print(f"{args.bits}-bit codes + float re-rank: mAP@k "
                  f"{report['hash']['hash_rerank_map@k']:.4f} vs float "
                  f"{report['hash']['float_map@k']:.4f}")
    if "registered_version" in report:
        print(f"registered as model version {report['registered_version']}")
    return EXIT_OK
