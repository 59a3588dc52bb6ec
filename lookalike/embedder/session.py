"""The session side of the embedder: where and how the model runs. The device and its plan
(precision, memory format, compilation), what runs each member's network (a `NetRunner` from
engines.py: eager torch, ONNX Runtime, an int8 graph), the batch size, inputs brought onto the
device, and batches pipelined so batch i+1 is launched before batch i is fetched.

Every engine fills the one seam, `NetRunner` (normalised pixels in, descriptor rows out), so a
remote model server is one more implementation of it; nothing here decides what a descriptor is
(ensemble.py, passes.py).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from lookalike.embedder.accel import AccelPlan, DeviceFeeder, plan_for, prepare, tuned_batch_size
from lookalike.embedder.backbones import ENSEMBLE_JOIN, Backbone
from lookalike.embedder.config import EmbedderConfig
from lookalike.embedder.engines import (
    EngineUnavailable,
    NetRunner,
    OnnxRunner,
    choose_engine,
    torch_runner,
)
from lookalike.embedder.ensemble import EnsembleModel, ModelMember
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.inputs import EmbedInput
from lookalike.embedder.quantize import int8_id
from lookalike.embedder.tensor_decode import resize_tensor
from lookalike.embedder.transforms import normalise, to_uint8_batch

log = logging.getLogger("lookalike.embedder")

def pick_device(name: str) -> torch.device:
    """`auto` is the first CUDA device when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True, slots=True)
class MemberRun:
    """One member's network as the session runs it."""

    # On the plan's device, in its memory format (compiled when asked).
    net: nn.Module
    run: NetRunner
    engine: str
    # The int8 graph's id ("" in float): part of the model spec, it is another embedding.
    quantization: str = ""


def int8_runner(config: EmbedderConfig, sizes: tuple[int, ...], members: int,
                width: int) -> tuple[NetRunner, str]:
    """The int8 graph of the config run by ONNX Runtime, and its id; EmbedderError when it is
    missing or made for another model."""
    if members > 1 or len(set(sizes)) > 1:
        raise EmbedderError("precision int8 takes one backbone at one input size (no ensemble, "
                            "test-time scales [1.0]); flip is fine")
    if config.int8_model is None:
        raise EmbedderError("precision int8 needs the int8 graph of the model: make one with "
                            "`lookalike quantize IMAGES_DIR` and set LOOKALIKE_MODEL__INT8_MODEL "
                            "to the file it writes")
    try:
        graph = config.int8_model.read_bytes()
    except OSError as exc:
        raise EmbedderError(f"cannot read the int8 graph {config.int8_model}: {exc}") from exc
    run = OnnxRunner.from_graph(graph, sizes[0], config.threads)
    try:
        fits = run(torch.zeros(1, 3, sizes[0], sizes[0])).shape[1] == width
    except Exception:  # ONNX Runtime refuses inputs of another size than the graph's
        fits = False
    if not fits:
        raise EmbedderError(f"the int8 graph {config.int8_model} was made for another model "
                            f"(not {sizes[0]} px inputs to {width} columns); make it again with "
                            "`lookalike quantize`")
    return run, int8_id(graph)


def member_run(config: EmbedderConfig, plan: AccelPlan, member: ModelMember,
               members: int) -> MemberRun:
    """`member` (one of `members`) placed by the plan, and what runs it under the config's
    engine and precision. `auto` falls back to torch, saying why, for a network ONNX Runtime
    cannot run; an explicit `onnxruntime` fails."""
    net = prepare(member.net, plan)
    engine = choose_engine(config.engine, plan)
    if plan.int8:
        run, quantization = int8_runner(config, member.sizes, members, member.width)
        return MemberRun(net, run, engine, quantization)
    if engine == "onnxruntime":
        try:
            runner = OnnxRunner.build(net, member.identity, member.sizes, config.cache_dir,
                                      config.threads)
            return MemberRun(net, runner, engine)
        except EngineUnavailable as exc:
            if config.engine == "onnxruntime":
                raise
            log.warning("%s runs on torch: %s", member.identity["backbone"], exc)
    return MemberRun(net, torch_runner(net, plan), "torch")


def fetch_rows(rows: torch.Tensor | None, width: int) -> NDArray[np.float32]:
    """Launched rows as float32 on the host (waits for the device); None: 0 x width."""
    if rows is None:
        return np.zeros((0, width), dtype=np.float32)
    return np.asarray(rows.float().cpu().numpy(), dtype=np.float32)


class Session:
    """The device plan and the runners of a model's members; forwards are serialised."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.plan: AccelPlan = plan_for(self.device, config.precision, config.channels_last,
                                        config.compile)
        self._feeder = DeviceFeeder(self.device)
        self._lock = threading.Lock()
        self.members: tuple[MemberRun, ...] = ()

    @property
    def batch_size(self) -> int:
        """Images per model batch: the configured size, or the family's default on the device
        for the engine the config picks (known without loading the model)."""
        return tuned_batch_size(self.config.backbone, self.device, self.config.batch_size,
                                self.config.input_size, choose_engine(self.config.engine, self.plan))

    @property
    def decodes_on_device(self) -> bool:
        """Whether JPEGs are decoded as tensors on the device."""
        if self.config.decoder == "auto":
            return self.device.type == "cuda"
        return self.config.decoder == "tensor"

    def start(self, model: EnsembleModel) -> None:
        """Place each member's network and choose what runs it."""
        self.members = tuple(member_run(self.config, self.plan, m, len(model.members))
                             for m in model.members)

    @property
    def engine(self) -> str:
        """What runs the networks: `onnxruntime` or `torch` (members on both: their names
        joined by `+`, in member order)."""
        return ENSEMBLE_JOIN.join(dict.fromkeys(m.engine for m in self.members))

    @property
    def quantization(self) -> str:
        """The int8 graphs' ids joined ("" in float)."""
        return ENSEMBLE_JOIN.join(m.quantization for m in self.members if m.quantization)

    def pixels(self, images: Sequence[EmbedInput], size: int, backbone: Backbone) -> torch.Tensor:
        """The normalised N x 3 x size x size batch of `backbone`, on the device, in the plan's
        memory format."""
        return normalise(self._resized(images, size), backbone.mean, backbone.std,
                         self.plan.channels_last)

    def forward(self, pixels: torch.Tensor, member: int) -> torch.Tensor:
        """One member's network on a normalised batch on the device, under the plan's
        precision; asynchronous on CUDA (the result is ready once read)."""
        with self._lock:
            return self.members[member].run(pixels)

    def pipelined(
        self, chunks: Iterable[Sequence[EmbedInput]],
        launch: Callable[[Sequence[EmbedInput]], torch.Tensor], width: int,
    ) -> Iterator[NDArray[np.float32]]:
        """The rows `launch` gives each chunk, in order (an empty chunk gives 0 x width).
        Chunk i+1 is prepared and launched before chunk i's result is fetched, so the host
        prepares a batch while the device still computes the one before."""
        pending: deque[torch.Tensor | None] = deque()
        for chunk in chunks:
            pending.append(launch(chunk) if len(chunk) else None)
            if len(pending) > 1:
                yield fetch_rows(pending.popleft(), width)
        while pending:
            yield fetch_rows(pending.popleft(), width)

    def _resized(self, images: Sequence[EmbedInput], size: int) -> torch.Tensor:
        """N x size x size x 3 uint8 on the device: PIL images resized on the host and copied,
        device tensors resized where they are."""
        mode = self.config.resize
        on_host = [im for im in images if isinstance(im, Image.Image)]
        host_rows = self._feeder.to_device(to_uint8_batch(on_host, size, mode)) if on_host else None
        if len(on_host) == len(images) and host_rows is not None:
            return host_rows
        from_host = iter(host_rows if host_rows is not None else ())
        return torch.stack([
            next(from_host) if isinstance(im, Image.Image)
            else resize_tensor(im.to(self.device), size, mode)
            for im in images
        ])
