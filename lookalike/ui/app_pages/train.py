"""Train page: fine-tune a model on a labelled folder on the server, watch its curves, compare it
with the pretrained model, and roll the served collection out to a registered version."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import altair as alt
import streamlit as st

from lookalike.services.client import TRAINING_LOSS_HELP as LOSS_HELP
from lookalike.services.client import TRAINING_LOSSES as LOSSES
from lookalike.services.client import (
    ClientError,
    Job,
    LookalikeClient,
    ModelInfo,
    TrainSummary,
)
from lookalike.ui.jobs_view import (
    act,
    adopt_running,
    follow_job,
    open_job_page,
    recent_jobs,
    recover,
    show_outcome,
    warn,
)
from lookalike.ui.resources import (
    ingested_text,
    markdown_text,
    show_error,
)

BITS = (48, 64, 128, 256)
# Backbones every server has without a download; the selectbox takes any other name too.
OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                     "mobilenet_v2")
DEFAULT_EPOCHS, MAX_EPOCHS = 10, 200
# Metric names of a registered version (ModelInfo.metrics), as the server records them.
FINETUNED_MAP, PRETRAINED_MAP = "finetuned_map", "pretrained_map"

# Widget keys.
FOLDER = "train_folder"
LOSS = "train_loss"
BITS_SELECT = "train_bits"
EPOCHS = "train_epochs"
BACKBONE = "train_backbone"
START = "train_start"
VERSION = "rollout_version"
ROLLOUT = "rollout_start"
ROLLOUT_CONFIRM = "rollout_confirm"
ROLLOUT_CANCEL = "rollout_cancel"
# The jobs this session follows (kept across page changes), a roll-out awaiting confirmation
# (its version), and outcomes to report once.
JOB_ID = "train_job_id"
ROLLOUT_JOB_ID = "rollout_job_id"
ROLLOUT_PENDING = "rollout_pending"
START_OUTCOME = "train_start_outcome"
ROLLOUT_OUTCOME = "rollout_outcome"

FOLDER_HELP = (
    "A labelled folder on the **server**: `<class>/<image>` sub-folders, or a folder with "
    "`labels.json`. The server only reads under its configured job roots. Its images are split "
    "by image, the same way every run: most train, the rest measure validation mAP after each "
    "epoch; the held-out half of each class then compares the trained model with the "
    "pretrained one."
)
IDLE_HINT = ("Start a training run above: the loss and validation mAP curves grow here epoch "
             "by epoch, then the comparison with the pretrained model.")
ROLLOUT_IDLE_HINT = ("Roll out a version above: the server rebuilds the collection with that "
                     "model while the current one keeps serving; its progress shows here.")


def _start(client: LookalikeClient) -> None:
    folder = str(st.session_state.get(FOLDER, "")).strip()
    if not folder:
        warn(START_OUTCOME, "Enter a labelled folder on the server to train on.")
        return
    loss = str(st.session_state.get(LOSS, LOSSES[0]))
    bits = int(st.session_state.get(BITS_SELECT, BITS[0]))
    epochs = int(st.session_state.get(EPOCHS, DEFAULT_EPOCHS))
    backbone = str(st.session_state.get(BACKBONE) or "")

    def start() -> str:
        st.session_state[JOB_ID] = client.start_training(
            folder, loss=loss, bits=bits, epochs=epochs, backbone=backbone).id
        return ""

    act(START_OUTCOME, start)


def _chart(records: list[dict[str, Any]], field: str, title: str) -> None:
    data = alt.Data(values=records)  # type: ignore[no-untyped-call]  # altair leaves it untyped
    # A y axis from 0 would flatten changes of a few points into one line.
    chart = alt.Chart(data, title=title).mark_line(point=True).encode(
        x=alt.X("Epoch:Q", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y(f"{field}:Q", title=title, scale=alt.Scale(zero=False),
                axis=alt.Axis(format=".3~f")),
        tooltip=["Epoch:Q", alt.Tooltip(f"{field}:Q", format=".4f")],
    ).properties(height=240)
    st.altair_chart(chart, width="stretch")


def _curves(summary: TrainSummary) -> None:
    """Training loss and validation mAP per epoch, side by side (epoch 0: before training)."""
    if not summary.epochs:
        st.caption("The curves appear once the model has been measured before training.")
        return
    # Epoch 0 has no loss: None leaves a gap, where NaN would not serialise for the chart.
    records = [{"Epoch": e.epoch, "Loss": e.train_loss if math.isfinite(e.train_loss) else None,
                "mAP": e.val_map} for e in summary.epochs]
    loss_column, map_column = st.columns(2, gap="medium")
    with loss_column:
        _chart(records, "Loss", "Training loss")
    with map_column:
        _chart(records, "mAP", "Validation mAP")


def _details(job: Job) -> None:
    """What the run trains and how far it got: epoch, loss, validation mAP, curves."""
    summary = job.training
    if summary is None:
        return
    loss = summary.loss + (f", {summary.bits} bits" if summary.loss == "hash" else "")
    st.caption(f"{markdown_text(summary.backbone)} · {loss} · {summary.classes} classes, "
               f"{summary.images:,} images in {markdown_text(summary.dataset)}")
    if summary.epochs:
        first, last = summary.epochs[0], summary.epochs[-1]
        with st.container(horizontal=True):
            st.metric("Epoch", f"{last.epoch} of {summary.epochs_planned}", border=True,
                      icon=":material/repeat:")
            st.metric("Training loss",
                      f"{last.train_loss:.4f}" if math.isfinite(last.train_loss) else "—",
                      border=True, icon=":material/trending_down:")
            st.metric("Validation mAP", f"{last.val_map:.3f}", border=True,
                      icon=":material/trending_up:",
                      delta=_points(last.val_map, first.val_map) if last.epoch else None,
                      help=f"Before training: {first.val_map:.3f}.")
    _curves(summary)


def _points(after: float, before: float, against: str = "") -> str:
    """The change from `before` to `after` in mAP points (st.metric colours it by its sign);
    a change that rounds to zero reads as 0.0, not as a red -0.0."""
    points = round(100 * (after - before), 1) + 0.0
    return f"{points:+.1f} points" + (f" vs {against}" if against else "")


def _summary_json(summary: TrainSummary) -> str:
    """The summary as JSON, epoch 0's missing loss as null (NaN is not JSON)."""
    data = asdict(summary)
    for epoch in data["epochs"]:
        if not math.isfinite(epoch["train_loss"]):
            epoch["train_loss"] = None
    return json.dumps(data, indent=2)


def _comparison(summary: TrainSummary) -> None:
    """Pretrained vs fine-tuned mAP on the held-out half, and the learned codes vs float."""
    if summary.pretrained_map is None or summary.finetuned_map is None:
        st.caption("The comparison with the pretrained model was not measured.")
        return
    with st.container(horizontal=True):
        st.metric("Pretrained mAP", f"{summary.pretrained_map:.3f}", border=True,
                  icon=":material/history:",
                  help=f"{summary.backbone} as it came, before fine-tuning.")
        st.metric("Fine-tuned mAP", f"{summary.finetuned_map:.3f}", border=True,
                  icon=":material/model_training:",
                  delta=_points(summary.finetuned_map, summary.pretrained_map, "pretrained"))
        if summary.hashed_map is not None and summary.float_map is not None:
            st.metric(f"Learned {summary.bits}-bit codes mAP", f"{summary.hashed_map:.3f}",
                      border=True, icon=":material/data_array:",
                      delta=_points(summary.hashed_map, summary.float_map, "float"),
                      help=f"Hamming search on the learned codes, re-ranked in float; float "
                           f"search alone: {summary.float_map:.3f}.")
    st.caption("On the held-out half of each class, never trained on: each held-out image a "
               "query against the held-out half, both models measured in the same run.")
    if summary.comparison:
        with st.expander("Every number measured", icon=":material/table:"):
            names = sorted(summary.comparison)
            st.dataframe({"Measure": names, "Value": [summary.comparison[n] for n in names]},
                         hide_index=True, key="train_comparison",
                         column_config={"Value": st.column_config.NumberColumn(format="%.4f")})


def _trained_epochs(summary: TrainSummary) -> int:
    """Epochs trained: epoch 0 in the curves is the model before training."""
    return sum(1 for e in summary.epochs if e.epoch > 0)


def _result(job: Job) -> None:
    """The finished run: how it ended, the comparison, the registered version."""
    summary = job.training
    if summary is None or not summary.epochs:
        return
    with st.container(border=True, key="train_result"):
        st.subheader("Compared with the current model", anchor=False)
        ended = "stopped early: validation mAP no longer improved" if summary.stopped_early \
            else f"ran {_trained_epochs(summary)} of {summary.epochs_planned} epochs"
        st.markdown(f"Training {ended}; the weights of epoch **{summary.best_epoch}** (best "
                    "validation mAP) are kept.")
        _comparison(summary)
        if summary.version:
            st.success(f"Registered as **{markdown_text(summary.version)}**: roll it out below "
                       "to serve it.", icon=":material/inventory_2:")
        st.download_button(
            "Download curves and scores (JSON)", _summary_json(summary),
            file_name=f"training-{job.id}.json", mime="application/json",
            key="train_download", icon=":material/download:", on_click="ignore",
        )


def _no_details(job: Job) -> None:
    """A roll-out has no counters beyond its progress and message."""


def _rollout_result(job: Job) -> None:
    """After a swap, what the servers need (the message above names their settings)."""
    if job.state != "succeeded":
        return
    if "This server embeds with it now" in job.message:
        st.success(f"The collection now serves {markdown_text(job.source)}, and this server "
                   "searches and ingests with it. Restart any other API server of this "
                   "collection with the model settings named above.",
                   icon=":material/published_with_changes:")
    else:
        st.warning(f"The collection now serves {markdown_text(job.source)}. Restart the API "
                   "servers with the model settings named above: until then they still embed "
                   "with the previous model, so they refuse searches by image and ingests.",
                   icon=":material/restart_alt:")


def _settings_form(client: LookalikeClient, served_backbone: str) -> None:
    with st.container(border=True, key="train_form"):
        st.text_input("Labelled folder", key=FOLDER, placeholder="/data/train/products",
                      help=FOLDER_HELP)
        with st.container(horizontal=True):
            loss = st.selectbox(
                "Loss", LOSSES, key=LOSS,
                help=" ".join(f"**{name}**: {text}." for name, text in LOSS_HELP.items()))
            st.selectbox("Hash bits", BITS, key=BITS_SELECT, disabled=loss != "hash",
                         help="Length of the learned binary code (hash loss only).")
            st.number_input("Epochs", min_value=1, max_value=MAX_EPOCHS, value=DEFAULT_EPOCHS,
                            step=1, key=EPOCHS,
                            help="At most this many; training stops early once validation mAP "
                                 "stops improving.")
            backbones = tuple(dict.fromkeys(
                [served_backbone, *OFFLINE_BACKBONES] if served_backbone else OFFLINE_BACKBONES))
            st.selectbox("Backbone", backbones, key=BACKBONE, accept_new_options=True,
                         help="The network to fine-tune; the first is the one the server "
                              "serves now.")
        st.button("Start training", key=START, type="primary", icon=":material/play_arrow:",
                  on_click=_start, args=(client,))
    show_outcome(client, START_OUTCOME, "training run")


def _versions_table(models: list[ModelInfo]) -> None:
    shown = list(reversed(models))
    st.dataframe(
        {
            "Version": [m.version for m in shown],
            "Serving": [m.serving for m in shown],
            "Created": [ingested_text(m.created_at) for m in shown],
            "Backbone": [m.backbone for m in shown],
            "Loss": [m.loss + (f" ({m.bits} bits)" if m.loss == "hash" else "") for m in shown],
            "Pretrained mAP": [m.metrics.get(PRETRAINED_MAP) for m in shown],
            "Fine-tuned mAP": [m.metrics.get(FINETUNED_MAP) for m in shown],
            "Trained on": [m.trained_on for m in shown],
            "Size (MB)": [m.size_bytes / 1e6 for m in shown],
        },
        hide_index=True, key="train_models",
        column_config={
            "Pretrained mAP": st.column_config.NumberColumn(format="%.3f"),
            "Fine-tuned mAP": st.column_config.NumberColumn(format="%.3f"),
            "Size (MB)": st.column_config.NumberColumn(format="%.1f"),
            "Serving": st.column_config.CheckboxColumn("Serving"),
        },
    )


def _forget_pending() -> None:
    st.session_state.pop(ROLLOUT_PENDING, None)


def _ask_rollout() -> None:
    st.session_state[ROLLOUT_PENDING] = str(st.session_state.get(VERSION, ""))


def _roll_out(client: LookalikeClient, models: list[ModelInfo], collection: str) -> None:
    """Choose a version, confirm, start the roll-out job."""
    by_version = {m.version: m for m in reversed(models)}
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.selectbox("Version to serve", tuple(by_version), key=VERSION, width=240,
                     on_change=_forget_pending,
                     format_func=lambda v: f"{v} (serving)" if by_version[v].serving else v)
        st.button("Roll out…", key=ROLLOUT, icon=":material/rocket_launch:",
                  on_click=_ask_rollout)
    pending = st.session_state.get(ROLLOUT_PENDING)
    if isinstance(pending, str) and pending in by_version:
        chosen = by_version[pending]
        with st.container(border=True, key="rollout_confirmation"):
            st.warning(
                f"Roll out **{markdown_text(chosen.version)}** ({markdown_text(chosen.backbone)}, "
                f"trained on {markdown_text(chosen.trained_on)})? The server re-embeds every "
                f"image of **{markdown_text(collection)}** with this model into a new "
                "collection while the current one keeps serving, then serves the new one. The "
                "current collection is kept for a rollback.",
                icon=":material/warning:",
            )
            with st.container(horizontal=True):
                confirmed = st.button(f"Roll out {chosen.version}", key=ROLLOUT_CONFIRM,
                                      type="primary", icon=":material/rocket_launch:")
                st.button("Cancel", key=ROLLOUT_CANCEL, on_click=_forget_pending)
        if confirmed:
            def start() -> str:
                st.session_state[ROLLOUT_JOB_ID] = client.start_rollout(
                    chosen.version, confirm=True).id
                return ""

            act(ROLLOUT_OUTCOME, start)
            _forget_pending()
            st.rerun()
    show_outcome(client, ROLLOUT_OUTCOME, "roll-out")


def _models(client: LookalikeClient, collection: str) -> None:
    """The registry's versions, and rolling the collection out to one of them."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader("Model versions", anchor=False)
        st.button("Refresh", key="train_models_refresh", icon=":material/refresh:",
                  type="tertiary")
    try:
        models = client.list_models()
    except ClientError as exc:
        show_error(client, exc, "model listing")
        return
    if not models:
        st.caption("The registry holds no trained model yet: a finished training run adds one.")
    else:
        _versions_table(models)
        _roll_out(client, models, collection)
    # A roll-out cannot stop part way: the server refuses to cancel it.
    follow_job(client, ROLLOUT_JOB_ID, prefix="rollout", unit="images", details=_no_details,
               result=_rollout_result, idle_hint=ROLLOUT_IDLE_HINT, cancellable=False)


def render() -> None:
    """The whole page: the training form and run, the model versions and roll-out, recent jobs."""
    opened = open_job_page(
        "Train", "Fine-tune the model on your own labelled images, watch it learn, compare it "
        "with the model the server uses now, and roll the collection out to it.", "train")
    if opened is None:
        return
    client, jobs = opened
    try:
        stats = client.stats()
    except ClientError as exc:
        recover(client, exc, "statistics request", "train_retry_stats")
        return
    adopt_running(jobs, "train", JOB_ID)
    adopt_running(jobs, "rollout", ROLLOUT_JOB_ID)

    _settings_form(client, stats.model.backbone)
    follow_job(client, JOB_ID, prefix="train", unit="epochs", details=_details, result=_result,
               idle_hint=IDLE_HINT)
    _models(client, stats.collection)
    recent_jobs(jobs, "train_jobs")


render()
