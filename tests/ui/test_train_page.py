"""The Train page in Streamlit's AppTest against a real gRPC server that trains, registers and
rolls out models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import DEMO_COUNT, open_app, run_until_finished, table

PAGE = "train.py"
# class -> colour of its generated images; 16 each (the fewest a training job takes): 8 held
# out for the comparison, 2 validate each epoch, 6 are trained on.
CLASSES = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
PER_CLASS = 16
BACKBONE = "mobilenet_v2"


def write_labelled_folder(root: Path) -> Path:
    """`root` as <class>/<image> sub-folders of noisy 48 px images, one colour per class."""
    rng = np.random.default_rng(0)
    for name, rgb in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = np.array(rgb, np.float32) + rng.normal(0, 25, (48, 48, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
            image.save(root / name / f"{i}.png")
    return root


def metrics(at: AppTest) -> dict[str, str]:
    """Every metric on the page, by label."""
    return {m.label: m.value for m in at.metric}


def test_page_offers_the_settings_and_an_empty_registry(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str
) -> None:
    """The form offers the losses, bits and backbones (the served one first); other losses
    disable the bits; the registry starts empty."""
    at = open_app(monkeypatch, job_server_address, PAGE)
    assert not at.exception
    assert not at.error
    assert at.title[0].value == "Train"
    assert at.selectbox(key="train_loss").options == ["hash", "triplet", "arcface"]
    assert at.selectbox(key="train_bits").value == 48
    backbones = at.selectbox(key="train_backbone")
    assert backbones.value == "efficientnet_lite0"
    assert BACKBONE in backbones.options
    at.selectbox(key="train_loss").set_value("triplet").run()
    assert at.selectbox(key="train_bits").disabled
    assert at.button(key="train_start").label == "Start training"
    assert any("holds no trained model yet" in c.value for c in at.caption)


def test_folder_outside_the_job_roots_is_refused(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, demo_dir: Path
) -> None:
    """A folder outside the server's job roots shows the server's refusal, and no job starts."""
    at = open_app(monkeypatch, job_server_address, PAGE)
    at.text_input(key="train_folder").set_value(str(demo_dir))
    at.button(key="train_start").click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The server refused this training run:")
    assert "outside the job roots" in at.error[0].value
    assert not at.status


def test_training_shows_curves_comparison_and_rolls_out_after_confirmation(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, job_root: Path
) -> None:
    """A 2-epoch run on a tiny folder goes live to "succeeded" with the loss and validation mAP
    curves and the held-out comparison; the version is listed; rolling it out asks first, then
    re-indexes the collection as a job; this server then searches with the trained model and the
    page says only other servers need a restart."""
    folder = write_labelled_folder(job_root / "colours")
    at = open_app(monkeypatch, job_server_address, PAGE)
    at.text_input(key="train_folder").set_value(str(folder))
    at.number_input(key="train_epochs").set_value(2)
    at.selectbox(key="train_backbone").set_value(BACKBONE)
    at = run_until_finished(at.button(key="train_start").click().run())
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.status[0].label.endswith("· succeeded"), at.status[0].label
    assert len(at.get("vega_lite_chart")) == 2
    shown = metrics(at)
    assert shown["Epoch"] == "2 of 2"
    for name in ("Pretrained mAP", "Fine-tuned mAP", "Learned 48-bit codes mAP"):
        assert 0.0 <= float(shown[name]) <= 1.0, name
    assert any("Registered as **v1**" in s.value for s in at.success)
    assert at.download_button(key="train_download").label.startswith("Download curves")

    versions = table(at, "Version")
    assert list(versions["Version"]) == ["v1"]
    assert list(versions["Backbone"]) == [BACKBONE]
    assert not versions["Serving"].iloc[0]

    at.button(key="rollout_start").click().run()
    assert not at.exception
    assert any("Roll out **v1**" in w.value for w in at.warning)
    at.button(key="rollout_cancel").click().run()
    assert not at.warning
    assert not [b for b in at.button if b.key == "rollout_confirm"]
    at.button(key="rollout_start").click().run()
    at = run_until_finished(at.button(key="rollout_confirm").click().run())
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    rollout = [s for s in at.status if s.label.startswith("Roll-out of v1")]
    assert len(rollout) == 1
    assert rollout[0].label.endswith("· succeeded"), rollout[0].label
    assert f"{DEMO_COUNT} of {DEMO_COUNT} images" in " ".join(
        p.proto.text for p in at.get("progress"))
    assert table(at, "Version")["Serving"].iloc[0]
    assert any("this server searches and ingests with it" in s.value for s in at.success)
    assert not at.warning

