"""The texts members read: acks, status lines, results, /job, the queue. Pure formatting, no I/O."""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath

import discord.utils

from bot.queue.api import QueueEntry
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import UNDELIVERABLE, JobRecord

CONTENT_LIMIT = 2000  # characters in a message's content (docs/discord.md, "Messages")
PROMPT_ECHO_LIMIT = 300  # echoed prompts are cut here; the full prompt is in the database and /job
QUEUE_LINES = 15  # /queue lists this many of the server's jobs (and every one of the member's)
DATABASE_AWAY = "The job database cannot be reached right now (it may be restarting); please try again in a minute."

KIND_NAMES = {
    JobKind.IMAGE: "image",
    JobKind.ANIMATION: "animation",
    JobKind.STYLE_TRANSFER: "style transfer",
    JobKind.UPSCALE: "upscale",
}
STATE_NAMES = {
    JobStatus.QUEUED: "⏳ queued",
    JobStatus.RUNNING: "🎨 rendering",
    JobStatus.DONE: "✅ done",
    JobStatus.FAILED: "❌ failed",
    JobStatus.CANCELLED: "🛑 cancelled",
}


# an absolute path of two or more parts (not a URL's, not inside a word): errors name files, never folders
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\])/(?:[^\s/'\"`<>|]+/)+[^\s/'\"`<>|]*")


def without_paths(text: str) -> str:
    """`text` with every absolute path cut to its file name: no host folder reaches Discord."""
    return _ABSOLUTE_PATH.sub(lambda m: PurePosixPath(m.group(0)).name or "a folder", text)


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def quote_prompt(prompt: str, limit: int = PROMPT_ECHO_LIMIT) -> str:
    """A prompt made safe to echo: markdown and mentions escaped, newlines flattened, length capped."""
    flat = " ".join(prompt.split())
    return discord.utils.escape_mentions(discord.utils.escape_markdown(truncate(flat, limit)))


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """`▰▰▰▱▱ 60%` style bar; an unknown total shows an empty bar."""
    fraction = min(1.0, max(0.0, done / total)) if total > 0 else 0.0
    filled = math.floor(fraction * width)
    return "▰" * filled + "▱" * (width - filled) + f" {math.floor(fraction * 100)}%"


def eta(seconds: float | None, now: float) -> str:
    """A Discord relative timestamp (counts down client-side, no edits needed), or 'unknown'."""
    if seconds is None:
        return "unknown"
    return f"<t:{math.ceil(now + max(0.0, seconds))}:R>"


def describe_spec(spec: JobSpec, seed: int | None = None) -> str:
    """The parameters a member would need to render the same thing again."""
    parts = [f"{spec.width}×{spec.height}"]
    if spec.kind is JobKind.IMAGE:
        parts.append(f"{spec.iterations} iterations")
    else:
        parts.append(f"{spec.frames} frames × {spec.iterations} iterations")
    if spec.kind is JobKind.ANIMATION:
        parts.append(f"zoom {spec.zoom:g}, shift {spec.shift_x},{spec.shift_y}")
    if spec.kind is JobKind.STYLE_TRANSFER:
        parts.append(f"{spec.extraction_fps:g} fps, source weight {spec.source_image_weight:g}")
    chosen = seed if seed is not None else spec.seed
    parts.append(f"seed {chosen}" if chosen is not None else "random seed")
    parts.append(f"model {spec.vqgan_model}")
    if spec.init_image:
        parts.append("from an init image")
    if spec.image_prompts:
        parts.append("with an image prompt")
    return " · ".join(parts)


def ack_text(entry: QueueEntry, now: float) -> str:
    """The ephemeral acknowledgement: job id, position and ETA."""
    job = entry.job
    where = "starting now" if entry.position == 0 else f"position {entry.position} in the queue"
    return (
        f"Job **#{job.id}** accepted ({KIND_NAMES[job.kind]}), {where}; "
        f"starts {eta(entry.eta_start_s, now)}, done {eta(entry.eta_done_s, now)}. "
        f"Progress shows in this channel; `/job {job.id}` shows it anywhere."
    )


def status_text(
    job: JobRecord,
    *,
    step: int | None = None,
    steps: int | None = None,
    frame: int | None = None,
    position: int | None = None,
    eta_done_s: float | None = None,
    now: float,
    note: str | None = None,
) -> str:
    """The public status message of a job: prompt, state, progress, ETA."""
    lines = [
        f"**#{job.id}** {KIND_NAMES[job.kind]} for <@{job.owner.user_id}>: “{quote_prompt(job.spec.text_prompts)}”",
        describe_spec(job.spec, job.seed),
    ]
    state = STATE_NAMES[job.state]
    if job.state is JobStatus.QUEUED:
        where = f" · position {position}" if position else ""
        lines.append(f"{state}{where} · done {eta(eta_done_s, now)}")
    elif job.state is JobStatus.RUNNING:
        done, total = step if step is not None else job.step, steps if steps is not None else job.steps
        line = f"{state} {progress_bar(done, total)} ({done}/{total})"
        frames = job.spec.frames if job.kind is not JobKind.IMAGE else 1
        if frames > 1 and frame:
            line += f" · frame {frame}/{frames}"
        if eta_done_s is not None:
            line += f" · done {eta(eta_done_s, now)}"
        lines.append(line)
    else:
        lines.append(state + (f": {truncate(without_paths(job.error), 300)}" if job.error else ""))
    if note:
        lines.append(note)
    return truncate("\n".join(lines), CONTENT_LIMIT)


def result_text(job: JobRecord, *, fitted_from: int | None = None) -> str:
    """The public result message: mention, prompt, parameters, and a note when the file was re-encoded."""
    verb = "stopped early (partial result)" if job.partial else "is ready"
    lines = [
        f"<@{job.owner.user_id}>, your {KIND_NAMES[job.kind]} **#{job.id}** {verb}: “{quote_prompt(job.spec.text_prompts)}”",
        describe_spec(job.spec, job.seed),
    ]
    if fitted_from is not None:
        lines.append(
            f"Re-encoded to fit Discord's upload limit (full size {human_bytes(fitted_from)} kept; `/job {job.id}`)."
        )
    return truncate("\n".join(lines), CONTENT_LIMIT)


def failure_text(job: JobRecord) -> str:
    """The public message for a job that failed."""
    reason = truncate(without_paths(job.error or "internal error"), 500)
    return f"<@{job.owner.user_id}>, job **#{job.id}** failed: {discord.utils.escape_mentions(reason)}"


def human_bytes(n: int) -> str:
    """1536 → '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def job_text(
    job: JobRecord, *, entry: QueueEntry | None, now: float, full_size: int | None = None, link: str | None = None
) -> str:
    """What /job shows: state, full prompt, parameters, result."""
    lines = [
        f"**#{job.id}** {KIND_NAMES[job.kind]} by <@{job.owner.user_id}> · {STATE_NAMES[job.state]}",
        f"Prompt: “{quote_prompt(job.spec.text_prompts, 1200)}”",
        describe_spec(job.spec, job.seed),
    ]
    if entry is not None and not job.finished:
        where = "running" if entry.position == 0 else f"position {entry.position}"
        lines.append(f"{where} · progress {progress_bar(job.step, job.steps)} · done {eta(entry.eta_done_s, now)}")
    if job.worker_id is not None:
        verb = {JobStatus.RUNNING: "Rendering", JobStatus.QUEUED: "Last rendered"}.get(job.state, "Rendered")
        on = f" ({job.device})" if job.device else ""
        lines.append(f"{verb} on worker `{job.worker_id}`{on}")
    if job.error:
        lines.append(f"Error: {truncate(without_paths(job.error), 300)}")
    if job.result_paths and job.results_expired_at is not None:
        lines.append(
            f"The result file has expired: it was deleted <t:{int(job.results_expired_at)}:R>, "
            "as the bot keeps results for a limited time."
        )
    elif job.result_paths:
        lines.append(f"Result: {len(job.result_paths)} file(s)" + (" (partial)" if job.partial else ""))
    if job.finished and job.result_message_id == UNDELIVERABLE and job.result_paths and not job.results_expired_at:
        lines.append("The result could not be posted in its channel (gone, or no access); the file is kept on disk.")
    if full_size is not None:
        lines.append(
            f"The posted file was re-encoded to fit; the full-size file ({human_bytes(full_size)}) is kept on disk."
        )
    if link:
        lines.append(link)
    return truncate("\n".join(lines), CONTENT_LIMIT)


def queue_text(
    entries: list[QueueEntry], *, guild_id: int | None, member: int, now: float, workers: tuple[int, int] | None = None
) -> str:
    """What /queue shows in one server: its own jobs with their places among every server's, and only the
    number of the other servers' jobs (never their prompts or owners); `workers` (alive, known) when several
    render workers share the queue."""
    text = _queue_lines(entries, guild_id=guild_id, member=member, now=now)
    if workers is not None:
        alive, known = workers
        text = f"{alive} of {known} render workers are up.\n{text}"
    return truncate(text, CONTENT_LIMIT)


def _queue_lines(entries: list[QueueEntry], *, guild_id: int | None, member: int, now: float) -> str:
    ours = [e for e in entries if e.job.owner.guild_id == guild_id]
    others = len(entries) - len(ours)
    elsewhere = f" (and {others} from other servers, counted in the places and times below)" if others else ""
    if not ours:
        if not others:
            return "The queue is empty; a new job starts at once."
        return f"This server has no jobs in the queue; {others} job(s) from other servers are ahead of a new one."
    lines = [f"**{len(ours)} job(s)** from this server in the queue{elsewhere}:"]
    shown = ours[:QUEUE_LINES] + [e for e in ours[QUEUE_LINES:] if e.job.owner.user_id == member]
    for e in shown:
        where = "▶ running" if e.position == 0 else f"{e.position}."
        mine = " **(yours)**" if e.job.owner.user_id == member else ""
        prompt = quote_prompt(e.job.spec.text_prompts, 60)
        lines.append(f"{where} #{e.job.id} {KIND_NAMES[e.job.kind]} “{prompt}”{mine} · done {eta(e.eta_done_s, now)}")
    if not any(e.job.owner.user_id == member for e in ours):
        lines.append("You have no jobs in the queue here.")
    return truncate("\n".join(lines), CONTENT_LIMIT)
