"""Static int8 quantization of a member's exported graph, calibrated on the user's own images.

The recipe was chosen by measurement on imagenette_val224 alone (calibrated on 200 of its
images, judged on 500 others) and then reported, unchanged, on corel1k and ukbench_mini
(docs/BENCHMARKS.md). What mattered, in order:

- the exported graph's run-time padding folded into the convolutions first (onnx_graph.py):
  without it the int8 kernels stop at every Pad and int8 was barely faster than fp32;
- everything after the backbone's last convolution stays float (pooling, normalisation, the
  classifier, the output's concatenation): quantizing the joined descriptor and logits gave them
  one scale, and the descriptor (values below 0.3 next to logits up to 13) a few levels;
- the stem and the first block stay float: the high-resolution layers carry most of the error;
- 7-bit weights on the other non-depthwise convolutions: AVX2 without VNNI multiplies uint8 by
  int8 in int16 pairs that saturate on 8-bit weights, and the descriptors then differed from one
  CPU to another; with 7 bits they are the same bit for bit (checked under an emulated Haswell);
- percentile calibration (99.999, asymmetric), per-channel weights, QDQ. The number of
  calibration images (20 to 500) and MinMax against percentile hardly mattered.

int8 descriptors differ from fp32 ones (cosine about 0.99), so an int8 model is another
embedding: it has its own spec and its own collection.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lookalike.embedder.errors import EmbedderError

# Images per calibration batch, and batches per pass of the calibrator (it keeps one pass's
# activations in memory): calibration sets are used in whole passes of 40 images.
CALIBRATION_BATCH = 8
PASS_BATCHES = 5
IMAGES_PER_PASS = CALIBRATION_BATCH * PASS_BATCHES
# The stem and the first block: the convolutions before the fourth one stay float.
FLOAT_CONVS = 3
PERCENTILE = 99.999


class QuantizationError(EmbedderError):
    """A graph or a calibration set that cannot make an int8 model."""


def calibration_count(available: int) -> int:
    """How many of `available` images a calibration uses: whole passes of 40; QuantizationError
    below one pass."""
    if available < IMAGES_PER_PASS:
        raise QuantizationError(f"int8 calibration needs at least {IMAGES_PER_PASS} images, got "
                                f"{available}")
    return available // IMAGES_PER_PASS * IMAGES_PER_PASS


def _float_nodes(model: Any) -> list[str]:
    """The nodes that stay float: those before the (FLOAT_CONVS + 1)-th Conv, and those after
    the last Conv and its activation (an exported graph lists its nodes in topological order)."""
    nodes = list(model.graph.node)
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    if len(convs) <= FLOAT_CONVS:
        raise QuantizationError(f"the graph has {len(convs)} convolutions: int8 leaves the first "
                                f"{FLOAT_CONVS} float, so there is nothing to quantize")
    last = convs[-1]
    after = last + 1
    if after < len(nodes) and nodes[after].op_type in ("Clip", "Relu") and (
            nodes[last].output[0] in nodes[after].input):
        after += 1
    return [node.name for i, node in enumerate(nodes) if i < convs[FLOAT_CONVS] or i >= after]


def _seven_bit_weights(model: Any, floats: set[str]) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides giving the quantized non-depthwise convolutions 7-bit weights."""
    def depthwise(node: Any) -> bool:
        return any(a.name == "group" and a.i > 1 for a in node.attribute)

    return {node.input[1]: [{"axis": 0, "reduce_range": True}] for node in model.graph.node
            if node.op_type == "Conv" and not depthwise(node) and node.name not in floats}


def quantize_int8(graph: bytes, batches: Sequence[NDArray[np.float32]],
                  input_name: str = "pixels") -> bytes:
    """`graph` (a member's fp32 graph, padding folded) quantized to int8, calibrated on
    `batches` of normalised pixels (CALIBRATION_BATCH images each, a multiple of PASS_BATCHES
    of them)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not batches or len(batches) % PASS_BATCHES:
        raise QuantizationError(f"calibration takes whole passes of {PASS_BATCHES} batches, got "
                                f"{len(batches)} batches")

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        """The calibration batches, as ORT's calibrators read them (a range at a time)."""

        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._next = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            batch = next(self._next, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch)}

    model = onnx.load_from_string(graph)
    floats = _float_nodes(model)
    with (tempfile.TemporaryDirectory(prefix="lookalike-int8-") as tmp, _quiet_quantizer()):
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(graph)
        quantize_static(
            str(source), str(target), calibration_data_reader=Batches(),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "Clip", "Add"],
            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=floats,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": PERCENTILE, "CalibTensorRangeSymmetric": False,
                           "CalibStridedMinMax": PASS_BATCHES,
                           "TensorQuantOverrides": _seven_bit_weights(model, set(floats))},
        )
        return target.read_bytes()


class _FromQuantizer(logging.Filter):
    """Matches the records onnxruntime's quantizer logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or "quantization" not in record.pathname


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer prints its progress and logs advice (to pre-process the graph,
    which the fold above did) on the root logger: neither belongs in our output."""
    quiet = _FromQuantizer()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(quiet)


def int8_id(graph: bytes) -> str:
    """The id an int8 graph goes by in model specs: its content's hash."""
    return f"int8-{hashlib.sha256(graph).hexdigest()[:12]}"
