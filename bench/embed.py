"""`lookalike bench embed`: decode-only, forward-only and end-to-end images/s per backbone and
device, side by side in one process.

- decode: the decoder `Embedder.embed_bytes` uses on that device (PIL at reduced JPEG scale on
  the CPU; batched nvJPEG on CUDA), bytes to pixels, one thread;
- forward: the network alone on a normalised batch of the same images already on the device,
  at the embedder's batch size and precision;
- end to end: `Embedder.embed_bytes` on the JPEG bytes: decode, resize, copy, forward, read back.

Each engine (torch, ONNX Runtime) runs the same backbone in the same rounds, so their ratio is
measured side by side. `--sweep` measures the forward pass alone per engine, intra-op threads
and batch size instead: what the CPU defaults (engine, batch size) were chosen by.

Speed does not depend on the weights' values, so a backbone whose default weights cannot be
fetched (no internet) runs with random weights through the `--weights FILE` path, and the
result says so.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench.machine import describe_machine, print_row
from lookalike.core.settings import ModelSettings, Settings
from lookalike.embedder.errors import WeightsUnavailable
from lookalike.embedder.runtime import Embedder
from lookalike.embedder.tensor_decode import decode_jpegs
from lookalike.ingestion.int8 import folder_images, make_int8
from lookalike.ingestion.model_config import embedder_config

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `embed` to `lookalike bench`."""
    parser = commands.add_parser("embed", help="decode / forward / end-to-end images/s per backbone")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--sets", nargs="+", default=["corel1k", "imagenette_val224"])
    parser.add_argument("--backbones", nargs="+",
                        default=["mobilenet_v2", "efficientnet_lite0", "resnet50"])
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, and cuda when a GPU is present")
    parser.add_argument("--decoders", nargs="+", default=["auto"], choices=["auto", "pil", "tensor"],
                        help="JPEG decoders to compare (auto: nvJPEG on CUDA, PIL on the CPU)")
    parser.add_argument("--images", type=int, default=0,
                        help="JPEGs per round (0: 256 on the CPU, 4096 on CUDA; files repeat)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"],
                        choices=["torch", "onnxruntime"], help="engines compared (CPU only: "
                        "CUDA runs torch)")
    parser.add_argument("--sweep", action="store_true",
                        help="forward images/s per engine, --threads and --batch-sizes (first "
                        "backbone, CPU) instead of the table")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8, 16, 32])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2],
                        help="intra-op threads of the sweep")
    parser.add_argument("--int8-backbones", nargs="*", default=["efficientnet_lite0"],
                        help="backbones that also get an int8 row on the CPU, in the same rounds")
    parser.add_argument("--int8-calibrate", default="imagenette_val224",
                        help="set whose images calibrate the int8 graph (speed does not depend "
                             "on it; quality is `bench int8`'s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def _jpegs(args: argparse.Namespace) -> list[bytes]:
    files: list[Path] = []
    for name in args.sets:
        root = args.datasets / name
        files += sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no JPEGs under {args.datasets} for sets {args.sets}")
    return [p.read_bytes() for p in files]


def _cycle(blobs: Sequence[bytes], count: int) -> list[bytes]:
    return [blobs[i % len(blobs)] for i in range(count)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(call: Callable[[], object], device: torch.device) -> float:
    """Wall time of `call`, the device drained before the clock stops."""
    _sync(device)
    started = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - started


def _embedder(model: ModelSettings, scratch: Path) -> tuple[Embedder, str]:
    """The loaded embedder for `model`, with random weights written to `scratch` when its
    default weights cannot be loaded here."""
    embedder = Embedder(embedder_config(model))
    try:
        embedder.load()
        return embedder, "default"
    except WeightsUnavailable:
        import torchvision

        path = scratch / f"{model.backbone}-random.pth"
        torch.save(torchvision.models.get_model(model.backbone, weights=None).state_dict(), path)
        embedder = Embedder(embedder_config(model.model_copy(update={"weights": str(path)})))
        embedder.load()
        return embedder, "random (default weights unavailable offline; speed is the same)"


def _decode_all(embedder: Embedder, blobs: Sequence[bytes]) -> None:
    if not embedder.decodes_on_device:
        for data in blobs:
            embedder.decode(data)
        return
    step = embedder.batch_size
    for start in range(0, len(blobs), step):
        decode_jpegs(blobs[start:start + step], embedder.device)


def _forward_all(embedder: Embedder, blobs: Sequence[bytes], count: int) -> Callable[[], object]:
    """The network on one batch of the real images, decoded, resized and on the device
    beforehand, `count // batch` times (real pixels: on this CPU, random ones ran half as fast);
    an ensemble runs each member on its own input."""
    batch = [embedder.decode(data) for data in _cycle(blobs, embedder.batch_size)]
    pixels = [embedder.pixels(batch, member=i) for i in range(len(embedder.members))]
    rounds = max(1, count // embedder.batch_size)

    def call() -> None:
        for _ in range(rounds):
            for i, member_pixels in enumerate(pixels):
                embedder.forward(member_pixels, member=i)

    return call


def _int8_model(model: ModelSettings, args: argparse.Namespace, scratch: Path) -> ModelSettings:
    """`model` at precision int8, its graph calibrated on `args.int8_calibrate` into `scratch`."""
    fp32 = Embedder(embedder_config(model.model_copy(update={
        "engine": "auto", "precision": "fp32", "device": "cpu"}), cache_dir=scratch))
    fp32.load()
    root = args.datasets / args.int8_calibrate
    made = make_int8(fp32, folder_images(root / "images" if (root / "images").is_dir() else root,
                                         240), scratch)
    return model.model_copy(update={"engine": "auto", "precision": "int8",
                                    "int8_model": str(made.path)})


def _engines(device: str, engines: Sequence[str]) -> list[str]:
    """The engines to compare on `device`: ONNX Runtime runs on the CPU only here."""
    return [e for e in engines if device == "cpu" or e == "torch"] or ["torch"]


def measure(models: Sequence[ModelSettings], blobs: Sequence[bytes],
            repeats: int) -> list[dict[str, Any]]:
    """The three rates of each model (one backbone on one device, an engine each); medians of
    `repeats` rounds, each round running every model in turn."""
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-embed-") as scratch:
        loaded = [_embedder(model, Path(scratch)) for model in models]
    plans: list[dict[str, tuple[int, Callable[[], object]]]] = []
    for embedder, _ in loaded:
        forward_count = max(1, len(blobs) // embedder.batch_size) * embedder.batch_size
        plans.append({
            "decode": (len(blobs), partial(_decode_all, embedder, blobs)),
            "forward": (forward_count, _forward_all(embedder, blobs, len(blobs))),
            "end_to_end": (len(blobs), partial(embedder.embed_bytes, blobs)),
        })
        # Warm-up beyond load's one batch: every path once at full size.
        embedder.embed_bytes(blobs[: embedder.batch_size])
        _forward_all(embedder, blobs, embedder.batch_size)()
    # Rounds interleave the models and their three calls, so a busy neighbour on a shared
    # machine slows all alike.
    seconds: list[dict[str, list[float]]] = [{key: [] for key in calls} for calls in plans]
    for _ in range(repeats):
        for calls, spent, (embedder, _) in zip(plans, seconds, loaded, strict=True):
            for key, (_, call) in calls.items():
                spent[key].append(_seconds(call, embedder.device))
    results: list[dict[str, Any]] = []
    for model, (embedder, weights_note), calls, spent in zip(models, loaded, plans, seconds,
                                                              strict=True):
        rate = {key: count / statistics.median(spent[key]) for key, (count, _) in calls.items()}
        decode, forward, end_to_end = rate["decode"], rate["forward"], rate["end_to_end"]
        device = embedder.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
            f"cpu, {torch.get_num_threads()} threads")
        results.append({
            "backbone": model.backbone,
            "device": f"{device} ({name})",
            "engine": embedder.engine + (" int8" if model.precision == "int8" else ""),
            "decode_images_per_s": round(decode, 1),
            "forward_images_per_s": round(forward, 1),
            "end_to_end_images_per_s": round(end_to_end, 1),
            "end_to_end_over_forward": round(end_to_end / forward, 3),
            "plan": embedder.plan.describe(),
            "decoder": "pil" if not embedder.decodes_on_device else (
                "tensor (nvJPEG)" if device.type == "cuda" else "tensor (libjpeg-turbo)"),
            "batch_size": embedder.batch_size,
            "input_px": embedder.spec.input_size,
            "images": len(blobs),
            "weights": weights_note,
        })
    torch_rate = next((r["end_to_end_images_per_s"] for r in results if r["engine"] == "torch"),
                      None)
    for result in results:
        result["end_to_end_over_torch"] = (round(result["end_to_end_images_per_s"] / torch_rate, 2)
                                           if torch_rate else None)
    return results


def sweep(model: ModelSettings, blobs: Sequence[bytes], engines: Sequence[str],
          threads: Sequence[int], batch_sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """Forward images/s of `model` per engine, intra-op threads and batch size on the CPU
    (medians of `repeats` rounds; each round runs every engine and thread count at one batch
    size in turn), one result per engine and thread count."""
    loaded = {}
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-embed-") as scratch:
        for engine in engines:
            for count in threads:
                update = {"engine": engine, "threads": count, "device": "cpu"}
                loaded[engine, count] = _embedder(model.model_copy(update=update),
                                                  Path(scratch))[0]
    decoded = [next(iter(loaded.values())).decode(data) for data in _cycle(blobs, max(batch_sizes))]
    rates: dict[tuple[str, int, int], list[float]] = {}
    for batch in batch_sizes:
        pixels = {key: e.pixels(decoded[:batch]) for key, e in loaded.items()}
        rounds = max(1, len(blobs) // batch)
        for (engine, count), embedder in loaded.items():  # warm-up at this batch size
            torch.set_num_threads(count)
            embedder.forward(pixels[engine, count])
        for _ in range(repeats):
            for (engine, count), embedder in loaded.items():
                # torch's thread count is the process's; ONNX Runtime's is its session's.
                torch.set_num_threads(count)
                spent = _seconds(partial(_repeat, embedder, pixels[engine, count], rounds),
                                 embedder.device)
                rates.setdefault((engine, count, batch), []).append(rounds * batch / spent)
    return [{"backbone": model.backbone, "engine": engine, "threads": count,
             "forward_images_per_s_by_batch": {
                 batch: round(statistics.median(rates[engine, count, batch]), 1)
                 for batch in batch_sizes}}
            for engine, count in loaded]


def _repeat(embedder: Embedder, pixels: torch.Tensor, rounds: int) -> None:
    for _ in range(rounds):
        embedder.forward(pixels)


TABLE_HEAD = (
    "| backbone | device | engine | decoder | plan | batch | decode img/s | forward img/s "
    "| end to end img/s | end to end / forward | end to end / torch | weights |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(result: dict[str, Any]) -> str:
    """One markdown row of the table under TABLE_HEAD."""
    return (
        f"| {result['backbone']} | {result['device']} | {result['engine']} "
        f"| {result['decoder']} | {result['plan']} "
        f"| {result['batch_size']} | {result['decode_images_per_s']} "
        f"| {result['forward_images_per_s']} | **{result['end_to_end_images_per_s']}** "
        f"| {result['end_to_end_over_forward']} | {result['end_to_end_over_torch']} "
        f"| {result['weights'].split(' (')[0]} |"
    )


def sweep_row(result: dict[str, Any]) -> str:
    """One markdown row of a sweep: engine, threads, then images/s per batch size."""
    rates = result["forward_images_per_s_by_batch"]
    best = max(rates.values())
    cells = " | ".join(f"**{r}**" if r == best else str(r) for r in rates.values())
    return f"| {result['backbone']} | {result['engine']} | {result['threads']} | {cells} |"


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Measure every backbone on every device (each engine side by side), or with --sweep the
    first backbone's forward rate per engine, threads and batch size; print one result each."""
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    jpegs = _jpegs(args)
    command = args.command_line
    if args.sweep:
        model = settings.model.model_copy(update={"backbone": args.backbones[0]})
        if not args.json:
            print(f"Command: `{command}`  \nMachine: {describe_machine()}\n")
            print("| backbone | engine | threads | "
                  + " | ".join(f"batch {b}" for b in args.batch_sizes) + " |")
            print("|---|---|---|" + "---|" * len(args.batch_sizes), flush=True)
        for result in sweep(model, _cycle(jpegs, args.images or 256), args.engines,
                            args.threads, args.batch_sizes, args.repeats):
            result["command"] = command
            print_row(result, args.json, sweep_row)
        return 0
    if not args.json:
        print(f"Command: `{command}`  \nMachine: {describe_machine()}\n")
        print(TABLE_HEAD, flush=True)
    for device in devices:
        count = args.images or (4096 if device.startswith("cuda") else 256)
        blobs = _cycle(jpegs, count)
        for backbone in args.backbones:
            for decoder in args.decoders:
                models = [settings.model.model_copy(update={
                    "backbone": backbone, "device": device, "decoder": decoder, "engine": engine})
                    for engine in _engines(device, args.engines)]
                with tempfile.TemporaryDirectory(prefix="lookalike-bench-int8-") as scratch:
                    if device == "cpu" and backbone in args.int8_backbones:
                        models.append(_int8_model(models[-1], args, Path(scratch)))
                    results = measure(models, blobs, args.repeats)
                for result in results:
                    result["command"] = command
                    print_row(result, args.json, table_row)
    return 0
