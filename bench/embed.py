"""`lookalike bench embed`: decode-only, forward-only and end-to-end images/s per backbone and
device, side by side in one process.

- decode: the decoder `Embedder.embed_bytes` uses on that device (PIL at reduced JPEG scale on
  the CPU; batched nvJPEG on CUDA), bytes to pixels, one thread;
- forward: the network alone on a normalised batch of the same images already on the device,
  at the embedder's batch size and precision;
- end to end: `Embedder.embed_bytes` on the JPEG bytes: decode, resize, copy, forward, read back.

Speed does not depend on the weights' values, so a backbone whose default weights cannot be
fetched (no internet) runs with random weights through the `--weights FILE` path, and the
result says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.machine import describe_machine, print_row
from lookalike.core.settings import ModelSettings, Settings
from lookalike.embedder.errors import WeightsUnavailable
from lookalike.embedder.runtime import Embedder
from lookalike.embedder.tensor_decode import decode_jpegs
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


def measure(model: ModelSettings, blobs: Sequence[bytes], repeats: int) -> dict[str, Any]:
    """The three rates for one backbone on one device; medians of `repeats` rounds."""
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-embed-") as scratch:
        embedder, weights_note = _embedder(model, Path(scratch))
    device = embedder.device
    forward_count = max(1, len(blobs) // embedder.batch_size) * embedder.batch_size
    calls = {
        "decode": (len(blobs), lambda: _decode_all(embedder, blobs)),
        "forward": (forward_count, _forward_all(embedder, blobs, len(blobs))),
        "end_to_end": (len(blobs), lambda: embedder.embed_bytes(blobs)),
    }
    # Warm-up beyond load's one batch: every path once at full size.
    embedder.embed_bytes(blobs[: embedder.batch_size])
    _forward_all(embedder, blobs, embedder.batch_size)()
    # Rounds interleave the three, so a busy neighbour on a shared machine slows all alike.
    seconds: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, (_, call) in calls.items():
            seconds[key].append(_seconds(call, device))
    rate = {key: count / statistics.median(seconds[key]) for key, (count, _) in calls.items()}
    decode, forward, end_to_end = rate["decode"], rate["forward"], rate["end_to_end"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu, {torch.get_num_threads()} threads")
    return {
        "backbone": model.backbone,
        "device": f"{device} ({name})",
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
    }


TABLE_HEAD = (
    "| backbone | device | decoder | plan | batch | decode img/s | forward img/s "
    "| end to end img/s | end to end / forward | weights |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(result: dict[str, Any]) -> str:
    """One markdown row of the table under TABLE_HEAD."""
    return (
        f"| {result['backbone']} | {result['device']} | {result['decoder']} | {result['plan']} "
        f"| {result['batch_size']} | {result['decode_images_per_s']} "
        f"| {result['forward_images_per_s']} | **{result['end_to_end_images_per_s']}** "
        f"| {result['end_to_end_over_forward']} | {result['weights'].split(' (')[0]} |"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Measure every backbone on every device and print one result each."""
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    jpegs = _jpegs(args)
    command = "lookalike bench embed " + " ".join(sys.argv[3:])
    if not args.json:
        print(f"Command: `{command}`  \nMachine: {describe_machine()}\n")
        print(TABLE_HEAD, flush=True)
    for device in devices:
        count = args.images or (4096 if device.startswith("cuda") else 256)
        blobs = _cycle(jpegs, count)
        for backbone in args.backbones:
            for decoder in args.decoders:
                model = settings.model.model_copy(
                    update={"backbone": backbone, "device": device, "decoder": decoder})
                result = measure(model, blobs, args.repeats)
                result["command"] = command
                print_row(result, args.json, table_row)
    return 0
