"""How the network runs on its device: precision, memory format, compilation, batch size,
and host-to-device copies that overlap compute.

Everything here is a no-op on the CPU unless asked for, so the CPU path stays bit-exact;
on CUDA the defaults are fp16 autocast, channels_last and per-family batch sizes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lookalike.embedder.errors import EmbedderError

Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]
Toggle = Literal["auto", "on", "off"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# Images per model batch on a CUDA device at 224 px, by backbone family (the first prefix that
# matches). Chosen so activations of a 16 GB card stay well inside memory in fp16; larger
# inputs scale the batch down by area. Not measured on a GPU here (none was lent): override
# with LOOKALIKE_MODEL__BATCH_SIZE.
_CUDA_BATCH = (
    ("mobilenet", 512), ("efficientnet_lite", 512), ("mnasnet", 512), ("resnet", 256),
    ("resnext", 256), ("regnet", 256), ("efficientnet", 256), ("convnext", 256),
    ("vit", 256), ("wide_resnet", 128), ("densenet", 128), ("vgg", 128),
)
_CUDA_DEFAULT_BATCH = 128
# Images per model batch on the CPU, by engine: the fastest per image in `lookalike bench embed
# --sweep` (efficientnet_lite0, 2 cores: ONNX Runtime 261 images/s at 16 against 240 at 32,
# torch 76 at 8 against 47 at 32; docs/BENCHMARKS.md).
CPU_BATCH = {"onnxruntime": 16, "torch": 8}
_NATIVE_PX = 224


class AccelUnsupported(EmbedderError):
    """A precision or option the device cannot run."""


@dataclass(frozen=True, slots=True)
class AccelPlan:
    """What `prepare` and `autocast` do for one device."""

    device: torch.device
    dtype: torch.dtype | None  # None: float32, no autocast
    channels_last: bool
    compile: bool
    # A static int8 graph (made by `lookalike quantize`) run by ONNX Runtime on the CPU.
    int8: bool = False

    @property
    def precision(self) -> str:
        """int8, fp16, bf16 or fp32."""
        if self.int8:
            return "int8"
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32") \
            if self.dtype is not None else "fp32"

    def describe(self) -> str:
        """A short label, e.g. `cuda:0 fp16 channels_last`."""
        parts = [str(self.device), self.precision]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compiled")
        return " ".join(parts)


def plan_for(device: torch.device, precision: Precision = "auto", channels_last: Toggle = "auto",
             compile_net: bool = False) -> AccelPlan:
    """The plan for `device`: `auto` means fp16 and channels_last on CUDA, fp32 and the default
    layout on the CPU (where autocast is slower than fp32 on most cores)."""
    cuda = device.type == "cuda"
    name = ("fp16" if cuda else "fp32") if precision == "auto" else precision
    if name == "int8" and cuda:
        raise AccelUnsupported(
            "precision int8 runs on the CPU (onnxruntime); on CUDA use fp16, bf16 or fp32")
    if name == "fp16" and not cuda:
        raise AccelUnsupported(
            "precision fp16 needs a CUDA device; on the CPU use bf16 or fp32"
        )
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise AccelUnsupported(f"{device} does not support bf16; use fp16 or fp32")
    layout = cuda if channels_last == "auto" else channels_last == "on"
    return AccelPlan(device=device, dtype=_DTYPES.get(name), channels_last=layout,
                     compile=compile_net, int8=name == "int8")


def prepare(net: nn.Module, plan: AccelPlan) -> nn.Module:
    """`net` on the plan's device and memory format, compiled when asked; in eval mode."""
    net = net.eval().to(plan.device)
    if plan.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if plan.compile:
        # `dynamic=False`: batch and input sizes repeat, so one specialised graph per shape.
        return torch.compile(net, dynamic=False)  # type: ignore[return-value]
    return net


@contextlib.contextmanager
def autocast(plan: AccelPlan) -> Iterator[None]:
    """Mixed precision for the forward pass, when the plan has a reduced dtype."""
    if plan.dtype is None:
        yield
        return
    with torch.autocast(device_type=plan.device.type, dtype=plan.dtype):
        yield


def tuned_batch_size(backbone: str, device: torch.device, configured: int = 0,
                     input_size: int = 0, engine: str = "torch") -> int:
    """`configured` when set, else the default for the backbone family on the device: on the
    CPU the engine's (CPU_BATCH: larger batches were slower per image there), more on CUDA,
    scaled by input area."""
    if configured:
        return configured
    if device.type != "cuda":
        return CPU_BATCH[engine]
    batch = next((n for prefix, n in _CUDA_BATCH if backbone.startswith(prefix)),
                 _CUDA_DEFAULT_BATCH)
    if input_size > _NATIVE_PX:
        batch = max(8, int(batch * (_NATIVE_PX / input_size) ** 2))
    return batch


def tuned_queue_batches(device: torch.device, configured: int = 0) -> int:
    """Batches each ingestion queue holds: `configured`, else 2 on the CPU (the model is slow,
    so a deep queue only holds memory) and 4 on CUDA (decode must stay ahead of a fast model)."""
    if configured:
        return configured
    return 4 if device.type == "cuda" else 2


class DeviceFeeder:
    """Host uint8 batches onto the device: on CUDA through pinned memory on a side stream, so
    the copy of batch i+1 overlaps the compute of batch i; on the CPU, the tensor itself."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = (
            torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
            if device.type == "cuda" else None
        )

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        """`host` on the device, ready for kernels on the current stream."""
        if self._stream is None:
            return host
        pinned = host.pin_memory()
        with torch.cuda.stream(self._stream):
            moved = pinned.to(self.device, non_blocking=True)
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self._stream)
        # The copy stream allocated `moved`; tell the allocator the compute stream uses it.
        moved.record_stream(current)
        return moved

