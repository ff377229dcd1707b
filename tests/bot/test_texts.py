"""Pure formatting: what members read in acks, status lines, results and /job."""

from __future__ import annotations

import pytest

from bot import texts
from bot.queue.api import QueueEntry
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import JobRecord, Owner


def job(**changes: object) -> JobRecord:
    values: dict[str, object] = {
        "id": 7,
        "kind": JobKind.IMAGE,
        "owner": Owner(user_id=42, guild_id=1, channel_id=2),
        "spec": JobSpec(text_prompts="a lighthouse | stormy:0.5", width=128, height=96, iterations=50, seed=3),
        "state": JobStatus.QUEUED,
        "created_at": 1000.0,
        "steps": 50,
    }
    values.update(changes)
    return JobRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("done", "total", "bar"),
    [
        (0, 10, "▱" * 20 + " 0%"),
        (5, 10, "▰" * 10 + "▱" * 10 + " 50%"),
        (10, 10, "▰" * 20 + " 100%"),
        (3, 0, "▱" * 20 + " 0%"),
    ],
)
def test_progress_bar(done: int, total: int, bar: str) -> None:
    assert texts.progress_bar(done, total) == bar


def test_prompts_are_escaped_flattened_and_cut() -> None:
    quoted = texts.quote_prompt("**bold** @everyone\nnext line " + "x" * 400)
    assert "\\*\\*bold\\*\\*" in quoted
    assert "@everyone" not in quoted.replace("@\u200beveryone", "")
    assert "\n" not in quoted
    assert len(quoted) < 340
    assert quoted.endswith("…")


def test_eta_is_a_relative_discord_timestamp() -> None:
    assert texts.eta(59.2, now=1000.0) == "<t:1060:R>"
    assert texts.eta(None, now=1000.0) == "unknown"


def test_ack_names_job_position_and_eta() -> None:
    entry = QueueEntry(job=job(), position=3, eta_start_s=60.0, eta_done_s=120.0)
    text = texts.ack_text(entry, now=1000.0)
    assert "#7" in text
    assert "position 3" in text
    assert "<t:1120:R>" in text


def test_status_of_a_running_job_shows_bar_and_eta() -> None:
    text = texts.status_text(job(state=JobStatus.RUNNING), step=25, steps=50, eta_done_s=30.0, now=1000.0)
    assert text.startswith("**#7** image for <@42>")
    assert "128×96 · 50 iterations · seed 3 · model vqgan_imagenet_f16_16384" in text
    assert "50% (25/50)" in text
    assert "<t:1030:R>" in text


def test_result_mentions_the_member_and_notes_reencoding() -> None:
    text = texts.result_text(job(state=JobStatus.DONE), fitted_from=15 * 1024 * 1024)
    assert text.startswith("<@42>, your image **#7** is ready")
    assert "15.0 MiB" in text
    partial = texts.result_text(job(state=JobStatus.CANCELLED, partial=True))
    assert "partial result" in partial


def test_animation_parameters_are_described() -> None:
    spec = JobSpec(kind=JobKind.ANIMATION, text_prompts="x", frames=12, iterations=30, zoom=1.05, shift_x=2)
    assert "12 frames × 30 iterations" in texts.describe_spec(spec)
    assert "zoom 1.05, shift 2,0" in texts.describe_spec(spec)


def test_everything_fits_in_one_message() -> None:
    huge = job(spec=JobSpec(text_prompts="y" * 5000), error="e" * 5000, state=JobStatus.FAILED)
    assert len(texts.status_text(huge, now=0.0)) <= texts.CONTENT_LIMIT
    assert len(texts.job_text(huge, entry=None, now=0.0, full_size=10)) <= texts.CONTENT_LIMIT


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (JobStatus.RUNNING, "Rendering on worker `gpu-2` (cuda:1)"),
        (JobStatus.DONE, "Rendered on worker `gpu-2` (cuda:1)"),
        (JobStatus.QUEUED, "Last rendered on worker `gpu-2` (cuda:1)"),
    ],
)
def test_job_names_the_worker_that_renders_or_rendered_it(state: JobStatus, line: str) -> None:
    assert line in texts.job_text(job(state=state, worker_id="gpu-2", device="cuda:1"), entry=None, now=0.0)
    assert "worker" not in texts.job_text(job(state=state), entry=None, now=0.0)


def test_queue_counts_the_live_workers_only_when_given() -> None:
    entries = [QueueEntry(job=job(), position=1, eta_start_s=None, eta_done_s=None)]
    plain = texts.queue_text(entries, guild_id=1, member=42, now=0.0)
    assert "render workers" not in plain
    shown = texts.queue_text(entries, guild_id=1, member=42, now=0.0, workers=(2, 3))
    assert shown.startswith("2 of 3 render workers are up.\n")
    assert shown.endswith(plain)
