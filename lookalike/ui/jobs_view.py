"""What the operator's pages share: following a server job live, recent jobs, action outcomes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import streamlit as st

from lookalike.services.client import BadFile, ClientError, Job, LookalikeClient
from lookalike.ui.resources import (
    forget_client,
    ingested_text,
    markdown_text,
    page_client,
    show_error,
    sidebar_status,
)

# How often the live view asks the server how a running job is doing.
POLL_S = 1.0
RECENT_JOBS = 10
KIND_NAMES = {"ingest": "Ingest", "evaluate": "Evaluation", "train": "Training",
              "rollout": "Roll-out"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action came to: a success to report, a warning, or the server's error."""

    message: str = ""
    warning: str = ""
    error: ClientError | None = None


# Confirmations the Admin page keeps in session state between runs. They live here because a
# page module is executed afresh on every run: an instance of the previous run's class would
# fail the isinstance checks of the next.
@dataclass(frozen=True, slots=True)
class RebuildPlan:
    """An index rebuild awaiting confirmation: the index type, and build parameters (unset
    ones: the server's settings)."""

    index_type: str
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class DeletePlan:
    """A delete awaiting confirmation: the stored ids asked for, or a filter; how many; a few
    of their file names."""

    ids: tuple[int, ...]
    filter_expr: str
    count: int
    sample: tuple[str, ...]


def act(key: str, action: Callable[[], str]) -> None:
    """Run `action` and keep its outcome under `key` for `show_outcome` to report once."""
    try:
        st.session_state[key] = Outcome(message=action())
    except ClientError as exc:
        st.session_state[key] = Outcome(error=exc)


def warn(key: str, text: str) -> None:
    """Keep a warning under `key` (the action was not tried) for `show_outcome`."""
    st.session_state[key] = Outcome(warning=text)


def show_outcome(client: LookalikeClient, key: str, action: str) -> None:
    """The outcome kept under `key`, if any, reported once: success, warning or error."""
    outcome = st.session_state.pop(key, None)
    if not isinstance(outcome, Outcome):
        return
    if outcome.error is not None:
        show_error(client, outcome.error, action)
        if outcome.error.unreachable:
            forget_client(client)
    elif outcome.warning:
        st.warning(outcome.warning, icon=":material/warning:")
    elif outcome.message:
        st.success(outcome.message, icon=":material/check_circle:")


def recover(client: LookalikeClient, exc: ClientError, action: str, key: str) -> None:
    """`exc` in words, and, when the server is out of reach, a fresh channel and "Try again"."""
    show_error(client, exc, action)
    if exc.unreachable:
        forget_client(client)
        st.button("Try again", key=key, icon=":material/refresh:")


def open_job_page(title: str, caption: str, prefix: str) -> tuple[LookalikeClient, list[Job]] | None:
    """A job page's head: its title and caption, the client and the sidebar, and the server's
    jobs; None, with the reason shown, when there is no client or the jobs cannot be listed."""
    st.title(title)
    st.caption(caption)
    client = page_client()
    if client is None:
        return None
    sidebar_status(client)
    try:
        jobs = client.list_jobs()
    except ClientError as exc:
        recover(client, exc, "job listing", f"{prefix}_retry")
        return None
    return client, jobs


def duration_text(seconds: float) -> str:
    """A duration as people read it: "<1 s", "42 s", "3 min 20 s", "2 h 5 min"."""
    if seconds < 1:
        return "<1 s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def eta_text(eta_s: float) -> str:
    """Time left ("unknown" while the server cannot tell)."""
    return "unknown" if eta_s < 0 else duration_text(eta_s)


def elapsed_s(job: Job) -> float:
    """Seconds the job has run (until it finished, or until now)."""
    if job.started_at <= 0:
        return 0.0
    end = job.finished_at if job.finished_at > 0 else time.time()
    return max(0.0, end - job.started_at)


def rate_per_s(job: Job) -> float:
    """The server's current rate; for a finished job that reports none, its average."""
    if job.rate_per_s > 0 or not job.finished:
        return job.rate_per_s
    took = elapsed_s(job)
    return job.done / took if took > 0 else 0.0


def _header(job: Job) -> str:
    kind = KIND_NAMES.get(job.kind, job.kind.capitalize())
    return f"{kind} of {markdown_text(job.source)} · {job.state}"


def _status_state(job: Job) -> Literal["running", "complete", "error"]:
    if job.state == "succeeded":
        return "complete"
    if job.state in ("failed", "cancelled"):
        return "error"
    return "running"


def _progress(job: Job, unit: str) -> None:
    """The progress bar; while the total is unknown, a bar at 0 that says what is going on."""
    if job.total > 0:
        fraction = min(1.0, max(0.0, job.done / job.total))
        st.progress(fraction, text=f"{job.done:,} of {job.total:,} {unit} ({fraction:.0%})")
    elif job.finished:
        st.progress(1.0 if job.state == "succeeded" else 0.0, text=f"{job.done:,} {unit}")
    else:
        st.progress(0, text=f"{job.done:,} {unit} so far · counting the work…")


def _timing(job: Job, unit: str) -> None:
    with st.container(horizontal=True):
        st.metric("Rate", f"{rate_per_s(job):,.1f} {unit}/s", border=True,
                  icon=":material/speed:")
        if job.finished:
            st.metric("Took", duration_text(elapsed_s(job)), border=True,
                      icon=":material/timer:")
        else:
            st.metric("Time left", eta_text(job.eta_s), border=True,
                      icon=":material/hourglass_top:")
            st.metric("Running for", duration_text(elapsed_s(job)), border=True,
                      icon=":material/timer:")
        st.metric("Started", ingested_text(job.started_at), border=True,
                  icon=":material/event:")


def job_panel(job: Job, unit: str, details: Callable[[Job], None]) -> None:
    """The job in a status container: progress, rate and time, `details`, what it is doing."""
    panel = st.status(_header(job), state=_status_state(job), expanded=True)
    # Filled through an inner container: leaving `with panel` would mark a running job complete.
    with panel.container():
        _progress(job, unit)
        _timing(job, unit)
        details(job)
        if job.message:
            if job.state == "failed":
                st.error(markdown_text(job.message), icon=":material/error:")
            else:
                st.caption(f":material/info: {markdown_text(job.message)}")


def _cancel(client: LookalikeClient, job_id: str, outcome_key: str) -> None:
    act(outcome_key, lambda: (
        f"Asked job {client.cancel_job(job_id).id} to stop after its current batch; "
        "what it already stored stays."))


@st.fragment(run_every=POLL_S)
def _live(client: LookalikeClient, job_id: str, prefix: str, unit: str,
          details: Callable[[Job], None], cancellable: bool = True) -> None:
    """The running job, asked for again every POLL_S; the whole page reruns once it stops."""
    try:
        job = client.get_job(job_id)
    except ClientError as exc:
        recover(client, exc, "progress check", f"{prefix}_retry_poll")
        return
    if job.finished:
        st.rerun()
    job_panel(job, unit, details)
    if not cancellable:
        return
    st.button("Cancel job", key=f"{prefix}_cancel", icon=":material/stop_circle:",
              on_click=_cancel, args=(client, job.id, f"{prefix}_cancel_outcome"),
              help="Stop after the current batch; what it already stored stays.")
    show_outcome(client, f"{prefix}_cancel_outcome", "cancellation")


def adopt_running(jobs: list[Job], kind: str, key: str) -> None:
    """Follow the newest unfinished job of `kind` when this session follows none yet.

    So a second browser tab, or a reload, shows the job another one started.
    """
    if st.session_state.get(key):
        return
    running = next((j for j in jobs if j.kind == kind and not j.finished), None)
    if running is not None:
        st.session_state[key] = running.id


def follow_job(
    client: LookalikeClient, key: str, *, prefix: str, unit: str,
    details: Callable[[Job], None], result: Callable[[Job], None], idle_hint: str,
    cancellable: bool = True,
) -> None:
    """The job whose id session state keeps under `key`: live while it runs, then `result`.

    `details` shows its counters (live and at the end); `idle_hint` shows when there is none;
    `prefix` starts the keys of the view's widgets (`<prefix>_cancel`); a job that cannot stop
    part way (not `cancellable`) gets no Cancel button.
    """
    job_id = st.session_state.get(key)
    if not job_id:
        st.info(idle_hint, icon=":material/info:")
        return
    try:
        job = client.get_job(str(job_id))
    except ClientError as exc:
        if exc.code.name == "NOT_FOUND":
            # The server restarted and forgot it: there is nothing left to follow.
            del st.session_state[key]
            st.info(idle_hint, icon=":material/info:")
            return
        recover(client, exc, "progress check", f"{prefix}_retry_job")
        return
    if not job.finished:
        _live(client, job.id, prefix, unit, details, cancellable)
        return
    job_panel(job, unit, details)
    result(job)


def recent_jobs(jobs: list[Job], key: str) -> None:
    """The server's latest jobs, newest first: kind, source, state, progress, start, duration."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader("Recent jobs", anchor=False)
        st.button("Refresh", key=f"{key}_refresh", icon=":material/refresh:", type="tertiary")
    if not jobs:
        st.caption("The server has run no job since it started.")
        return
    shown = jobs[:RECENT_JOBS]
    st.dataframe(
        {
            "Kind": [KIND_NAMES.get(j.kind, j.kind) for j in shown],
            "Source": [j.source for j in shown],
            "State": [j.state for j in shown],
            "Done": [f"{j.done:,} / {j.total:,}" if j.total else f"{j.done:,}" for j in shown],
            "Started": [ingested_text(j.started_at) for j in shown],
            "Took": [duration_text(elapsed_s(j)) if j.finished else "running" for j in shown],
            "Id": [j.id for j in shown],
        },
        hide_index=True, key=f"{key}_table",
    )
    if len(jobs) > RECENT_JOBS:
        st.caption(f"The {RECENT_JOBS} most recent of {len(jobs)} jobs.")


def bad_files_jsonl(failed: Sequence[BadFile]) -> str:
    """The files a job did not ingest as JSON Lines: one {"path", "reason"} object a line."""
    return "".join(json.dumps({"path": f.path, "reason": f.reason}) + "\n" for f in failed)
