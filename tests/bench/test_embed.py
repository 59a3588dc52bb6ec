"""`lookalike bench embed --json` prints one result per backbone, decoder, engine and device with
the keys the GPU issue names, and `--sweep` one per engine and thread count, from real runs on
generated JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main


def test_bench_embed_json_has_one_object_per_backbone_decoder_and_device(
    tiny_sets: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Both decoders run on the CPU and every rate is measured (positive)."""
    code = main(["embed", "--datasets", str(tiny_sets), "--sets", "tiny",
                 "--backbones", "mobilenet_v2", "--devices", "cpu", "--decoders", "pil", "tensor",
                 "--engines", "torch", "--images", "8", "--repeats", "1", "--json"])
    assert code == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["backbone"], r["decoder"]) for r in results] == [
        ("mobilenet_v2", "pil"), ("mobilenet_v2", "tensor (libjpeg-turbo)")]
    for result in results:
        assert result["device"].startswith("cpu")
        for key in ("decode_images_per_s", "forward_images_per_s", "end_to_end_images_per_s"):
            assert result[key] > 0
        assert result["images"] == 8


def test_bench_embed_compares_the_engines_side_by_side(
    tiny_sets: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """torch and ONNX Runtime run in the same rounds; each row has its ratio to torch."""
    code = main(["embed", "--datasets", str(tiny_sets), "--sets", "tiny",
                 "--backbones", "mobilenet_v2", "--devices", "cpu", "--images", "8",
                 "--repeats", "1", "--json"])
    assert code == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["engine"] for r in results] == ["torch", "onnxruntime"]
    assert results[0]["end_to_end_over_torch"] == 1.0
    assert results[1]["end_to_end_over_torch"] > 0


def test_bench_embed_sweeps_engines_threads_and_batch_sizes(
    tiny_sets: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """--sweep gives the forward rate of every engine and thread count at every batch size."""
    code = main(["embed", "--datasets", str(tiny_sets), "--sets", "tiny",
                 "--backbones", "mobilenet_v2", "--sweep", "--threads", "1", "2",
                 "--batch-sizes", "1", "2", "--images", "4", "--repeats", "1", "--json"])
    assert code == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["engine"], r["threads"]) for r in results] == [
        ("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2)]
    for result in results:
        rates = result["forward_images_per_s_by_batch"]
        assert list(rates) == ["1", "2"]
        assert all(rate > 0 for rate in rates.values())
