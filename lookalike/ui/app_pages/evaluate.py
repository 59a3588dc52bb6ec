"""Evaluate page: measure retrieval quality on a labelled folder on the server, per configuration."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import altair as alt
import streamlit as st

from lookalike.services.client import EvalSummary, Job, LookalikeClient
from lookalike.ui.jobs_view import (
    act,
    adopt_running,
    follow_job,
    open_job_page,
    recent_jobs,
    show_outcome,
    warn,
)
from lookalike.ui.resources import markdown_text

CONFIGS = ("baseline", "best")
CONFIG_HELP = {
    "baseline": "The backbone with GeM pooling, nothing else.",
    "best": "Every quality lever that helps on this kind of data, together.",
}
# Scores by the names `lookalike eval --json` gives them, in the order the table shows them.
SCORE_NAMES = {"p@1": "P@1", "p@5": "P@5", "p@10": "P@10", "map": "mAP", "ndcg@10": "NDCG@10"}

# Widget keys.
FOLDER = "eval_folder"
ABLATION = "eval_ablation"
CONFIG_SELECT = "eval_configs"
START = "eval_start"
# The job this session follows (kept across page changes), and the start's outcome.
JOB_ID = "eval_job_id"
START_OUTCOME = "eval_start_outcome"

FOLDER_HELP = (
    "A labelled folder on the **server**: `<class>/<image>` sub-folders (images of one class "
    "are relevant to each other), or a folder with `labels.json` (class labels) or "
    "`groundtruth.json` (queries and their relevant images). The server only reads under its "
    "configured job roots. Evaluation embeds the images on its own: the collection is not "
    "touched."
)
IDLE_HINT = ("Start an evaluation above: its progress, then the scores per configuration and "
             "the precision-at-K curves, show here.")


def _start(client: LookalikeClient) -> None:
    folder = str(st.session_state.get(FOLDER, "")).strip()
    ablation = bool(st.session_state.get(ABLATION, False))
    configs = [str(c) for c in st.session_state.get(CONFIG_SELECT, [])]
    if not folder:
        warn(START_OUTCOME, "Enter a labelled folder on the server to evaluate on.")
        return
    if not ablation and not configs:
        warn(START_OUTCOME, "Choose at least one configuration, or turn on the ablation.")
        return

    def start() -> str:
        st.session_state[JOB_ID] = client.start_evaluation(folder, configs, ablation).id
        return ""

    act(START_OUTCOME, start)


def _no_details(job: Job) -> None:
    """An evaluation has no counters beyond its progress."""


def _score_name(key: str) -> str:
    return SCORE_NAMES.get(key, key.capitalize())


def _score_keys(summary: EvalSummary) -> list[str]:
    """Known scores in table order, then any others the server sent, alphabetically."""
    sent = {key for row in summary.rows for key in row.scores}
    return [k for k in SCORE_NAMES if k in sent] + sorted(sent - SCORE_NAMES.keys())


def _scores_table(summary: EvalSummary) -> None:
    keys = _score_keys(summary)
    table: dict[str, list[Any]] = {
        "Configuration": [row.config for row in summary.rows],
        "Levers": [row.levers or "(none)" for row in summary.rows],
    }
    for key in keys:
        table[_score_name(key)] = [row.scores.get(key) for row in summary.rows]
    st.dataframe(
        table, hide_index=True, key="eval_scores",
        column_config={_score_name(k): st.column_config.NumberColumn(format="%.3f")
                       for k in keys},
    )


def _pk_chart(summary: EvalSummary) -> None:
    """Mean precision at K = 1, 2, ... per configuration, one line each."""
    rows = [row for row in summary.rows if row.pk_curve]
    if not rows:
        st.caption("The server sent no precision-at-K curve.")
        return
    records = [{"K": k, "Precision": p, "Configuration": row.config}
               for row in rows for k, p in enumerate(row.pk_curve, start=1)]
    # The curves of good configurations sit between 0.9 and 1; a y axis from 0 flattens them
    # into one line, so the axis spans the data.
    data = alt.Data(values=records)  # type: ignore[no-untyped-call]  # altair leaves it untyped
    chart = alt.Chart(data).mark_line(point=max(len(row.pk_curve) for row in rows) <= 60).encode(
        x=alt.X("K:Q", title="K (results looked at)"),
        y=alt.Y("Precision:Q", title="Mean precision at K", scale=alt.Scale(zero=False)),
        color=alt.Color("Configuration:N", legend=alt.Legend(orient="bottom")),
        tooltip=["Configuration:N", "K:Q", alt.Tooltip("Precision:Q", format=".3f")],
    ).properties(height=320)
    st.altair_chart(chart, width="stretch")


def _per_class(summary: EvalSummary) -> None:
    classes = sorted({name for row in summary.rows for name in row.per_class_ap})
    if not classes:
        return
    with st.expander(f"Average precision per class ({len(classes)} classes)",
                     icon=":material/category:"):
        table: dict[str, list[Any]] = {"Class": classes}
        for row in summary.rows:
            table[row.config] = [row.per_class_ap.get(name) for name in classes]
        st.dataframe(
            table, hide_index=True, key="eval_per_class",
            column_config={row.config: st.column_config.NumberColumn(format="%.3f")
                           for row in summary.rows},
        )


def _result(job: Job) -> None:
    """The finished evaluation: the dataset, scores per configuration, P@K curves, per-class AP."""
    summary = job.evaluation
    if summary is None or not summary.rows:
        return
    with st.container(border=True, key="eval_result"):
        st.subheader(f"Results on {markdown_text(summary.dataset)}", anchor=False)
        with st.container(horizontal=True):
            st.metric("Images", f"{summary.images:,}", border=True, icon=":material/image:")
            st.metric("Queries", f"{summary.queries:,}", border=True, icon=":material/search:")
            st.metric("Relevance", "same class" if summary.kind == "class" else "same instance",
                      border=True, icon=":material/rule:",
                      help="class: images of the query's class are relevant; instance: the "
                           "listed images of the same object or place are.")
            st.metric("Configurations", len(summary.rows), border=True, icon=":material/tune:")
        _scores_table(summary)
        st.markdown("**Precision at K**")
        _pk_chart(summary)
        _per_class(summary)
        st.download_button(
            "Download results (JSON)", json.dumps(asdict(summary), indent=2),
            file_name=f"evaluation-{job.id}.json", mime="application/json",
            key="eval_download", icon=":material/download:", on_click="ignore",
        )


def render() -> None:
    """The whole page: the start form, the followed evaluation and its results, recent jobs."""
    opened = open_job_page(
        "Evaluate", "Measure how well search finds images of the same class on a labelled "
        "folder: P@K, mAP and NDCG per configuration, side by side.", "eval")
    if opened is None:
        return
    client, jobs = opened
    adopt_running(jobs, "evaluate", JOB_ID)

    with st.container(border=True, key="eval_form"):
        st.text_input("Labelled folder", key=FOLDER, placeholder="/data/eval/holidays",
                      help=FOLDER_HELP)
        ablation = st.toggle(
            "Ablation: each quality lever on and off", key=ABLATION,
            help="One row per lever switched on alone on top of the baseline (slower); "
                 "replaces the configurations below.")
        st.multiselect(
            "Configurations", CONFIGS, default=["baseline"], key=CONFIG_SELECT,
            disabled=ablation,
            help=" ".join(f"**{name}**: {text}" for name, text in CONFIG_HELP.items()),
        )
        st.button("Start evaluation", key=START, type="primary", icon=":material/play_arrow:",
                  on_click=_start, args=(client,))
    show_outcome(client, START_OUTCOME, "evaluation")

    follow_job(client, JOB_ID, prefix="eval", unit="images", details=_no_details, result=_result,
               idle_hint=IDLE_HINT)
    recent_jobs(jobs, "eval_jobs")


render()
