"""Surgery on exported ONNX graphs that ONNX Runtime's own optimiser does not do.

EfficientNet-style "same" padding is computed from the input's size at run time, so the exported
graph carries, before each strided convolution, a Shape -> Gather -> ... -> Pad chain (about 400
nodes for efficientnet_lite0). A graph exported for one input size has pads that never change:
written into each Conv's `pads` attribute, the chains go, ONNX Runtime fuses whole blocks, and
the fp32 graph ran 1.4-1.8x faster on this CPU (int8 needs it too: its kernels stop at every Pad).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("lookalike.embedder")
# Folding changes no arithmetic, so the folded graph must give the same rows to float noise.
FOLD_TOLERANCE = 1e-4


def fold_static_pads(graph: bytes, input_name: str, size: int) -> bytes:
    """`graph` (input `input_name`, N x 3 x size x size) with each constant Pad that feeds a Conv
    folded into the Conv, and the nodes no output needs any more removed; `graph` itself when
    there is nothing to fold or the folded graph does not give the same rows."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load_from_string(graph)
    nodes = model.graph.node
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pads = [n for n in nodes if n.op_type == "Pad" and _foldable(n, consumers)]
    if not pads:
        return graph
    # The pads' values, read at two batch sizes: only those that depend on nothing but the
    # fixed input size are folded.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for pad in pads:
        probe.graph.output.append(helper.make_empty_tensor_value_info(pad.input[1]))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [pad.input[1] for pad in pads]
    one, two = (session.run(names, {input_name: np.zeros((n, 3, size, size), np.float32)})
                for n in (1, 2))
    for pad, amounts, again in zip(pads, one, two, strict=True):
        values = [int(v) for v in amounts]
        if not np.array_equal(amounts, again) or any(values[i] for i in (0, 1, 4, 5)):
            continue
        (conv,) = consumers[pad.output[0]]
        for attribute in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(attribute)
        conv.attribute.append(helper.make_attribute("pads", [values[2], values[3], values[6],
                                                             values[7]]))
        conv.input[0] = pad.input[0]
        nodes.remove(pad)
    _prune(model)
    folded: bytes = model.SerializeToString()
    if not _same_rows(graph, folded, input_name, size):
        log.warning("folding the padding changed the exported graph's output; kept it unfolded")
        return graph
    return folded


def _foldable(pad: Any, consumers: dict[str, list[Any]]) -> bool:
    """A constant-mode Pad without a fill value feeding exactly one Conv that pads nothing
    itself (the form EfficientNet's dynamic same padding exports to)."""
    mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
    if mode != b"constant" or (len(pad.input) > 2 and pad.input[2]):
        return False
    users = consumers.get(pad.output[0], [])
    if len(users) != 1 or users[0].op_type != "Conv":
        return False
    conv = users[0]
    own = next((a for a in conv.attribute if a.name == "pads"), None)
    auto = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
    return (own is None or not any(own.ints)) and auto in (b"NOTSET", b"")


def _prune(model: Any) -> None:
    """Remove the nodes (and initializers) no graph output depends on."""
    graph = model.graph
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for initializer in [t for t in graph.initializer if t.name not in needed]:
        graph.initializer.remove(initializer)


def _same_rows(graph: bytes, folded: bytes, input_name: str, size: int) -> bool:
    """Whether both graphs give the same rows, to float noise, on a random batch of 2."""
    import onnxruntime as ort

    batch = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    rows = [ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(
        None, {input_name: batch})[0] for g in (graph, folded)]
    return bool(np.abs(rows[0] - rows[1]).max() <= FOLD_TOLERANCE)
