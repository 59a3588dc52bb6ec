"""Ingest page: start ingesting a folder or S3 prefix on the server, follow it live, review it."""

from __future__ import annotations

import streamlit as st

from lookalike.services.client import Job, LookalikeClient
from lookalike.ui.jobs_view import (
    act,
    adopt_running,
    bad_files_jsonl,
    follow_job,
    open_job_page,
    recent_jobs,
    show_outcome,
    warn,
)

# Widget keys.
SOURCE = "ingest_source"
FORM = "ingest_form"
START = "ingest_start"
# The job this session follows (kept across page changes), and the start's outcome.
JOB_ID = "ingest_job_id"
START_OUTCOME = "ingest_start_outcome"

SOURCE_HELP = (
    "A folder on the **server** (the server reads it, not your browser), or `s3://bucket/prefix`. "
    "Each image's label is the name of the sub-folder it sits in, e.g. `photos/beach/1.jpg` is "
    "labelled `beach`. The server only reads under its configured job roots. Images already "
    "stored are skipped, so running the same source again is safe."
)
IDLE_HINT = ("Start an ingest above: its progress, counts and the files it could not read "
             "show here.")


def _start(client: LookalikeClient) -> None:
    source = str(st.session_state.get(SOURCE, "")).strip()
    if not source:
        warn(START_OUTCOME, "Enter a folder on the server or an s3://bucket/prefix to ingest.")
        return

    def start() -> str:
        st.session_state[JOB_ID] = client.start_ingest(source).id
        return ""

    act(START_OUTCOME, start)


def _counters(job: Job) -> None:
    """What the ingest did so far: added, already stored, duplicates, failed."""
    summary = job.ingest
    if summary is None:
        return
    with st.container(horizontal=True):
        st.metric("Added", f"{summary.added:,}", border=True, icon=":material/add_photo_alternate:")
        st.metric("Already stored", f"{summary.already_stored:,}", border=True,
                  icon=":material/inventory_2:", help="Stored before: skipped, nothing changed.")
        st.metric("Duplicates", f"{summary.duplicates:,}", border=True,
                  icon=":material/content_copy:",
                  help="Same bytes as another file of this source: stored once.")
        st.metric("Failed", f"{len(summary.failed):,}", border=True,
                  icon=":material/broken_image:", help="Files that could not be read or decoded.")


def _result(job: Job) -> None:
    """The finished ingest: one summary line and the report of files it could not ingest."""
    summary = job.ingest
    if summary is None:
        return
    with st.container(border=True, key="ingest_result"):
        st.subheader("Summary", anchor=False)
        st.markdown(
            f"Looked at **{summary.seen:,}** files: "
            f"**{summary.added:,}** added, **{summary.already_stored:,}** already stored, "
            f"**{summary.duplicates:,}** duplicates, **{len(summary.failed):,}** failed."
        )
        if not summary.failed:
            st.caption(":material/check: Every file was read.")
            return
        st.markdown("**Files not ingested**")
        st.dataframe(
            {"Path": [f.path for f in summary.failed],
             "Reason": [f.reason for f in summary.failed]},
            hide_index=True, key="ingest_bad_files",
        )
        st.download_button(
            "Download report (JSONL)", bad_files_jsonl(summary.failed),
            file_name=f"ingest-{job.id}-failed.jsonl", mime="application/jsonl",
            key="ingest_bad_files_download", icon=":material/download:", on_click="ignore",
        )


def render() -> None:
    """The whole page: the start form, the followed job, recent jobs."""
    opened = open_job_page(
        "Ingest", "Add a folder or an S3 prefix of images to the collection: the server reads, "
        "embeds and stores them in the background while you watch.", "ingest")
    if opened is None:
        return
    client, jobs = opened
    adopt_running(jobs, "ingest", JOB_ID)

    with st.form(FORM, border=True, enter_to_submit=True):
        st.text_input("Source", key=SOURCE, placeholder="/data/photos or s3://bucket/prefix",
                      help=SOURCE_HELP)
        st.form_submit_button("Start ingest", key=START, type="primary",
                              icon=":material/play_arrow:", on_click=_start, args=(client,))
    show_outcome(client, START_OUTCOME, "ingest")

    follow_job(client, JOB_ID, prefix="ingest", unit="files", details=_counters, result=_result,
               idle_hint=IDLE_HINT)
    recent_jobs(jobs, "ingest_jobs")


render()
