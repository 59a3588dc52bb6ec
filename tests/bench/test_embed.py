"""`lookalike bench embed --json` prints one result per backbone, decoder and device with the
keys the GPU issue names, from a real run on generated JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.cli import main


def test_bench_embed_json_has_one_object_per_backbone_decoder_and_device(
    tiny_sets: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Both decoders run on the CPU and every rate is measured (positive)."""
    code = main(["bench", "embed", "--datasets", str(tiny_sets), "--sets", "tiny",
                 "--backbones", "mobilenet_v2", "--devices", "cpu", "--decoders", "pil", "tensor",
                 "--images", "8", "--repeats", "1", "--json"])
    assert code == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["backbone"], r["decoder"]) for r in results] == [
        ("mobilenet_v2", "pil"), ("mobilenet_v2", "tensor (libjpeg-turbo)")]
    for result in results:
        assert result["device"].startswith("cpu")
        for key in ("decode_images_per_s", "forward_images_per_s", "end_to_end_images_per_s"):
            assert result[key] > 0
        assert result["images"] == 8
