"""`lookalike bench int8 --json`: an int8 graph calibrated on one generated set, reported on
another against fp32 (mAP of the three pairings, cosine) and timed beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main
from tests.conftest import encode, gradient_image


def test_bench_int8_calibrates_on_one_set_and_reports_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The calibration row, one quality row per reported set (mAPs in [0, 1], cosine close to
    1) and the speed of both at each batch size."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    sets = tmp_path / "sets"
    (sets / "cal").mkdir(parents=True)
    for seed in range(80):
        (sets / "cal" / f"{seed}.jpg").write_bytes(encode(gradient_image(120, 90, seed=seed)))
    for cls, seeds in (("a", range(100, 106)), ("b", range(200, 206))):
        (sets / "classes" / cls).mkdir(parents=True)
        for seed in seeds:
            (sets / "classes" / cls / f"{seed}.jpg").write_bytes(
                encode(gradient_image(120, 90, seed=seed)))
    code = main(["int8", "--datasets", str(sets), "--calibrate", "cal", "--count", "80",
                 "--sets", "classes", "--batch-sizes", "1", "2", "--repeats", "1", "--json"])
    assert code == 0
    calibration, quality, speed = (json.loads(line)
                                   for line in capsys.readouterr().out.splitlines())
    assert (calibration["calibrated_on"], calibration["checked_on"]) == (40, 40)
    assert calibration["model_id"].startswith("int8-")
    assert (quality["set"], quality["images"], quality["queries"]) == ("classes", 12, 12)
    for key in ("map_fp32", "map_int8", "map_int8_queries_fp32_database"):
        assert 0 < quality[key] <= 1
    assert quality["cosine_median"] > 0.9
    assert list(speed["int8_over_fp32"]) == ["1", "2"]
    assert all(rate > 0 for rate in speed["forward_images_per_s"]["int8"].values())
