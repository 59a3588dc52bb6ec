"""The Evaluate page in Streamlit's AppTest against a real gRPC server that runs evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import encode, gradient_image
from tests.ui.conftest import open_app, run_until_finished, table

PAGE = "evaluate.py"
# class -> seeds of its generated images.
CLASSES = {"dawn": (11, 12, 13, 14), "dusk": (21, 22, 23, 24)}


def write_labelled_folder(root: Path) -> Path:
    """`root` as <class>/<image> sub-folders of small generated JPEGs (CLASSES)."""
    for name, seeds in CLASSES.items():
        (root / name).mkdir(parents=True)
        for seed in seeds:
            image = gradient_image(width=96 + seed % 7, height=64, seed=seed)
            (root / name / f"{seed}.jpg").write_bytes(encode(image))
    return root


def test_page_offers_configurations_and_the_ablation(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str
) -> None:
    """The form starts on the baseline; turning the ablation on disables the configurations."""
    at = open_app(monkeypatch, job_server_address, PAGE)
    assert not at.exception
    assert not at.error
    assert at.title[0].value == "Evaluate"
    configs = at.multiselect(key="eval_configs")
    assert configs.value == ["baseline"]
    assert configs.options == ["baseline", "best"]
    assert not configs.disabled
    at.toggle(key="eval_ablation").set_value(True).run()
    assert at.multiselect(key="eval_configs").disabled
    assert at.button(key="eval_start").label == "Start evaluation"


def test_evaluation_shows_scores_table_and_pk_chart(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, job_root: Path
) -> None:
    """Evaluating a tiny labelled folder runs live to "succeeded": a baseline row and a P@K chart."""
    folder = write_labelled_folder(job_root / "labelled")
    at = open_app(monkeypatch, job_server_address, PAGE)
    at.text_input(key="eval_folder").set_value(str(folder))
    at = run_until_finished(at.button(key="eval_start").click().run())
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.status[0].label.endswith("· succeeded")
    scores = table(at, "Configuration")
    assert list(scores["Configuration"]) == ["baseline"]
    assert {"P@1", "P@10", "mAP"} <= set(scores.columns)
    assert 0.0 <= float(scores["mAP"].iloc[0]) <= 1.0
    assert {m.label: m.value for m in at.metric}["Images"] == str(
        sum(len(seeds) for seeds in CLASSES.values()))
    assert len(at.get("vega_lite_chart")) == 1
    per_class = table(at, "Class")
    assert sorted(per_class["Class"]) == sorted(CLASSES)
    assert at.download_button(key="eval_download").label == "Download results (JSON)"


def test_folder_outside_the_job_roots_is_refused(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, demo_dir: Path
) -> None:
    """A folder outside the server's job roots shows the server's refusal, and no job starts."""
    at = open_app(monkeypatch, job_server_address, PAGE)
    at.text_input(key="eval_folder").set_value(str(demo_dir))
    at.button(key="eval_start").click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The server refused this evaluation:")
    assert not at.status

