"""Inference engines under the Embedder: the same RetrievalNet run by eager PyTorch, or exported
to ONNX and run by ONNX Runtime.

The engine only runs a member's network on a normalised N x 3 x H x W batch; everything around
it (decoding, resizing, test-time passes, joining an ensemble, whitening) is the Embedder's and
the same for both, so descriptors from either engine compare (cosine >= 0.9999, a test) and a
collection built with one is searched with the other. On the CPU ONNX Runtime measured
1.4-3x faster than eager torch at every batch size (docs/BENCHMARKS.md), so `auto` takes it
there; torch stays for what only it does (CUDA here, reduced float precision, torch.compile,
channels_last), and for a network the exporter cannot take.

An exported graph has a free batch size and a fixed input size (R-MAC's regions are laid out
for one map size), so each member is exported once per test-time input size. The ONNX files are
cached on disk, keyed by everything the graph depends on (`export_key`), and written
atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from lookalike.embedder.accel import AccelPlan, autocast
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.onnx_graph import fold_static_pads

log = logging.getLogger("lookalike.embedder")

EngineName = Literal["auto", "torch", "onnxruntime"]
ENGINES: tuple[EngineName, ...] = ("auto", "torch", "onnxruntime")
# The ONNX opset of the exported graphs, and the version of what `export_onnx` writes: a change
# to either (or to torch, which writes the graph) keys new files.
OPSET = 17
# 2: the padding computed at run time folded into the convolutions (onnx_graph.py).
EXPORT_VERSION = 2
INPUT, OUTPUT = "pixels", "rows"


class NetRunner(Protocol):
    """What runs one member's network: a normalised N x 3 x H x W batch in, N rows of its raw
    descriptor (then its class logits) out. The one seam under the session: eager torch and
    ONNX Runtime fill it here, and a remote model server would be one more implementation."""

    def __call__(self, pixels: torch.Tensor, /) -> torch.Tensor:
        """The rows of `pixels`, in order."""
        ...


class EngineUnavailable(EmbedderError):
    """An engine that cannot run this model on this device with these options."""


def choose_engine(requested: EngineName, plan: AccelPlan) -> Literal["torch", "onnxruntime"]:
    """The engine a model runs on: `requested`, or for `auto` ONNX Runtime on the CPU in fp32 or
    int8 and torch otherwise; EngineUnavailable naming what conflicts when `onnxruntime` is
    asked for what only torch does, or torch for int8."""
    torch_only = [reason for reason, applies in (
        (f"{plan.device.type} (this onnxruntime runs on the CPU)", plan.device.type != "cpu"),
        ("reduced float precision (fp16, bf16)", plan.dtype is not None),
        ("torch.compile", plan.compile),
        ("channels_last", plan.channels_last),
    ) if applies]
    if plan.int8 and (requested == "torch" or torch_only):
        raise EngineUnavailable(
            "precision int8 runs on onnxruntime on the CPU, without "
            + ", ".join(torch_only or ["LOOKALIKE_MODEL__ENGINE=torch"]))
    if requested == "torch":
        return "torch"
    if requested == "onnxruntime" and torch_only:
        raise EngineUnavailable(
            "engine onnxruntime cannot run with " + ", ".join(torch_only)
            + ": set LOOKALIKE_MODEL__ENGINE=torch (or auto), or leave those options at auto")
    return "onnxruntime" if not torch_only else "torch"


def torch_runner(net: nn.Module, plan: AccelPlan) -> NetRunner:
    """`net` run by eager torch under the plan's precision."""

    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(plan):
            out: torch.Tensor = net(pixels)
            return out

    return run


def export_key(identity: Mapping[str, Any], size: int) -> str:
    """A file-name-safe key of the graph exported from the network `identity` describes (its
    backbone, weights id, pooling, p, heads...) at input size `size`: anything that changes the
    graph changes the key."""
    payload = json.dumps({**identity, "size": size, "opset": OPSET, "export": EXPORT_VERSION,
                          "torch": torch.__version__}, sort_keys=True, default=str)
    name = str(identity.get("backbone", "net")).replace("/", "_")
    return f"{name}-{size}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def export_onnx(net: nn.Module, size: int) -> bytes:
    """`net` (in eval mode) as an ONNX graph: input `pixels` N x 3 x size x size, output
    `rows`, the batch size free; padding that only depends on the size folded in."""
    sample = torch.zeros(1, 3, size, size)
    with (tempfile.TemporaryDirectory(prefix="lookalike-export-") as tmp, warnings.catch_warnings(),
          torch.inference_mode(False), torch.no_grad()):
        # The TorchScript exporter warns about tracing and its own deprecation; the parity
        # test, not its warnings, says whether the graph is right.
        warnings.simplefilter("ignore")
        out = Path(tmp) / "net.onnx"
        torch.onnx.export(
            net, (sample,), out, input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )
        return fold_static_pads(out.read_bytes(), INPUT, size)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def session_options(threads: int) -> Any:
    """ONNX Runtime session options: `threads` intra-op threads (0: one per physical core), one
    inter-op thread (the graph is a chain), and threads that sleep rather than spin between
    parallel sections."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # Spinning threads keep the cores from decoding, hashing and writing beside the model: the
    # ingestion pipeline ran 112.7 images/s without it against 102.8 with it (3 rounds each,
    # alternating, 800 images), though a bare forward loop ran 10-25% faster with it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRunner:
    """A member's network run by ONNX Runtime: one session per input size, each exported from
    the torch network on first use (or read from the cache)."""

    def __init__(self, sessions: Mapping[int, Any]) -> None:
        self._sessions = dict(sessions)

    @classmethod
    def from_graph(cls, graph: bytes, size: int, threads: int) -> OnnxRunner:
        """A session of a ready graph (an int8 one) for `size` px inputs."""
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(graph, session_options(threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EngineUnavailable(f"ONNX Runtime cannot load the graph: {exc}") from exc
        return cls({size: session})

    @classmethod
    def build(cls, net: nn.Module, identity: Mapping[str, Any], sizes: Sequence[int],
              cache_dir: Path | None, threads: int) -> OnnxRunner:
        """Sessions for each of `sizes`, from cached graphs where `cache_dir` has them (a file
        the runtime refuses is exported again), exported from `net` otherwise."""
        import onnxruntime as ort

        options = session_options(threads)
        sessions = {}
        for size in dict.fromkeys(sizes):
            path = cache_dir / f"{export_key(identity, size)}.onnx" if cache_dir else None
            sessions[size] = _session(ort, options, net, size, path)
        return cls(sessions)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        size = int(pixels.shape[-1])
        session = self._sessions.get(size)
        if session is None or pixels.shape[-2] != size:
            raise EngineUnavailable(f"no ONNX graph for {tuple(pixels.shape[-2:])} inputs; "
                                    f"exported for {sorted(self._sessions)} px squares")
        batch = pixels.detach().to("cpu", torch.float32).contiguous().numpy()
        rows = session.run([OUTPUT], {INPUT: batch})[0]
        return torch.from_numpy(rows)


def _session(ort: Any, options: Any, net: nn.Module, size: int, path: Path | None) -> Any:
    """An InferenceSession of `net` at `size`: the cached graph at `path` when it loads, else a
    fresh export (written to `path`)."""
    providers = ["CPUExecutionProvider"]
    if path is not None and path.is_file():
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # a truncated or foreign file: export again
            log.warning("cached ONNX graph %s does not load (%s); exporting it again", path, exc)
    try:
        data = export_onnx(net, size)
        session = ort.InferenceSession(data, options, providers=providers)
    except Exception as exc:
        raise EngineUnavailable(f"ONNX Runtime cannot run this network at {size} px: "
                                f"{type(exc).__name__}: {exc}") from exc
    if path is not None:
        _write_atomically(path, data)
    return session
