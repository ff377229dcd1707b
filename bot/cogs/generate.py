"""/imagine, /animate, /style and the buttons that start new jobs: cheap checks → files → JobSpec → submit → ack.

The order matters (docs/discord.md, "The 3-second acknowledgement"): options, the server's rules and
the caps are checked in memory or with one cheap count before any attachment is downloaded, and a
command with attachments defers before it downloads. A submit that the database holds up is deferred
too (`bot.acks.in_time`); the job is keyed by the interaction, so it is made once whatever the ack does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from bot import acks, attachments, job_options, texts, views
from bot.attachments import IMAGE, VIDEO, FileChecks
from bot.config import BotConfig
from bot.delivery.status import StatusMessages
from bot.errors import UserError
from bot.intake import Intake
from bot.queue.api import JobNotFound, QueueEntry, RenderQueue
from bot.queue.inputs import escape_path
from bot.server_settings import ServerLimits, ServerSettings
from engine import prompts
from engine.jobs import DEFAULT_UPSCALER, TINY, JobKind, JobSpec, JobStatus
from storage.records import JobRecord, Owner

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

# Discord-side ranges are the host's widest; the server's own limits are checked bot-side (bot.job_options)
Size = app_commands.Range[int, 16, 2048]
Iterations = app_commands.Range[int, 1, 5000]
Seed = app_commands.Range[int, 0, 2**32 - 1]
Prompt = app_commands.Range[str, 1, 1000]
MAX_INPUT_PIXELS = 4096 * 4096


class GenerateCog(commands.Cog):
    """Commands that create render jobs: submitted to `queue`, announced through `status`."""

    def __init__(
        self,
        queue: RenderQueue,
        status: StatusMessages,
        config: BotConfig,
        settings: ServerSettings,
        file_checks: FileChecks,
    ) -> None:
        self.render_queue, self.status, self.config = queue, status, config
        self.settings, self.file_checks = settings, file_checks
        self.intake = Intake()

    def button_actions(self) -> dict[str, views.ButtonAction]:
        """The job buttons this cog answers: each starts a new job from a finished one."""
        return {"reroll": self.follow_up, "vary": self.follow_up, "animate": self.follow_up, "upscale": self.follow_up}

    async def cog_load(self) -> None:
        # The tokenizer loads its vocabulary once (about a second); do it now, not inside someone's 3 s
        # (docs/discord.md, "The 3-second acknowledgement").
        await asyncio.to_thread(prompts.count_tokens, "warm up")

    # ---- commands --------------------------------------------------------------------------------

    @app_commands.command(name="imagine", description="Render a still image from a prompt")
    @app_commands.describe(
        prompt="What to draw; `|` separates parts, `:w` weights a part, `^` starts a new phrase",
        width="Width in pixels",
        height="Height in pixels",
        iterations="Optimisation steps (more: slower, more detail)",
        seed="Random seed, to render the same image again",
        model="VQGAN model",
        init_image="An image to start from",
        image_prompt="An image to steer towards",
    )
    @app_commands.guild_only()
    async def imagine(
        self,
        interaction: Interaction,
        prompt: Prompt,
        width: Size | None = None,
        height: Size | None = None,
        iterations: Iterations | None = None,
        seed: Seed | None = None,
        model: str | None = None,
        init_image: discord.Attachment | None = None,
        image_prompt: discord.Attachment | None = None,
    ) -> None:
        limits = self.settings.limits(interaction.guild_id)
        spec = job_options.base_spec(
            self.config,
            limits,
            JobKind.IMAGE,
            prompt,
            width=width,
            height=height,
            iterations=iterations,
            seed=seed,
            model=model,
        )
        if init_image is None and image_prompt is None:
            await self._submit_fast(interaction, spec, limits)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # downloads and checks take seconds
        async with self._held(interaction, limits):
            inputs: dict[str, Path] = {}
            try:
                if init_image is not None:
                    inputs["init_image"] = await self._fetch(interaction, IMAGE, init_image, "init", limits)
                    spec = dataclasses.replace(spec, init_image=str(inputs["init_image"]))
                if image_prompt is not None:
                    inputs["image_prompts"] = await self._fetch(interaction, IMAGE, image_prompt, "prompt", limits)
                    spec = dataclasses.replace(spec, image_prompts=escape_path(inputs["image_prompts"]))
            except BaseException:  # the second attachment was refused: the first one's download goes too
                await self._discard(inputs)
                raise
            await self._submit_deferred(interaction, spec, inputs, limits)

    @app_commands.command(name="animate", description="Render a zoom/pan animation from a prompt")
    @app_commands.describe(
        prompt="What to draw; the engine's prompt syntax (`|`, `:w`, `^`)",
        frames="Number of frames",
        zoom="Zoom per frame (1 = none, above 1 zooms in)",
        shift_x="Pixels to pan right per frame",
        shift_y="Pixels to pan down per frame",
        iterations_per_frame="Optimisation steps per frame",
        width="Width in pixels",
        height="Height in pixels",
        seed="Random seed",
        init_image="An image for the first frame",
    )
    @app_commands.guild_only()
    async def animate(
        self,
        interaction: Interaction,
        prompt: Prompt,
        frames: app_commands.Range[int, 2, 1000] | None = None,
        zoom: app_commands.Range[float, 0.5, 2.0] | None = None,
        shift_x: app_commands.Range[int, -64, 64] = 0,
        shift_y: app_commands.Range[int, -64, 64] = 0,
        iterations_per_frame: Iterations | None = None,
        width: Size | None = None,
        height: Size | None = None,
        seed: Seed | None = None,
        init_image: discord.Attachment | None = None,
    ) -> None:
        limits = self.settings.limits(interaction.guild_id)
        spec = job_options.base_spec(
            self.config,
            limits,
            JobKind.ANIMATION,
            prompt,
            width=width,
            height=height,
            iterations=iterations_per_frame,
            seed=seed,
            model=None,
        )
        zoom = 1.05 if zoom is None else zoom
        spec = job_options.animation(
            self.config, limits, spec, frames=frames, zoom=zoom, shift_x=shift_x, shift_y=shift_y
        )
        if init_image is None:
            await self._submit_fast(interaction, spec, limits)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self._held(interaction, limits):
            path = await self._fetch(interaction, IMAGE, init_image, "init", limits)
            spec = dataclasses.replace(spec, init_image=str(path))
            await self._submit_deferred(interaction, spec, {"init_image": path}, limits)

    @app_commands.command(name="style", description="Restyle an attached video with a prompt")
    @app_commands.describe(
        video="The video to restyle (MP4, WebM, MOV)",
        prompt="The style; the engine's prompt syntax (`|`, `:w`, `^`)",
        fps="Frames taken from the video per second",
        iterations_per_frame="Optimisation steps per frame",
        source_weight="How close each frame stays to its source frame",
        width="Width in pixels",
        height="Height in pixels",
        seed="Random seed",
    )
    @app_commands.guild_only()
    async def style(
        self,
        interaction: Interaction,
        video: discord.Attachment,
        prompt: Prompt,
        fps: app_commands.Range[float, 0.5, 30.0] = 10.0,
        iterations_per_frame: Iterations | None = None,
        source_weight: app_commands.Range[float, 0.0, 10.0] = 2.0,
        width: Size | None = None,
        height: Size | None = None,
        seed: Seed | None = None,
    ) -> None:
        limits = self.settings.limits(interaction.guild_id)
        spec = job_options.base_spec(
            self.config,
            limits,
            JobKind.STYLE_TRANSFER,
            prompt,
            width=width,
            height=height,
            iterations=iterations_per_frame,
            seed=seed,
            model=None,
        )
        job_options.style_options(fps, source_weight)
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self._held(interaction, limits):
            path, info = await self._fetch_video(interaction, video, limits)
            try:
                frames = job_options.style_frames(limits, info.seconds or 0.0, fps)
            except BaseException:
                await self._discard({"video": path})
                raise
            spec = dataclasses.replace(
                spec, video=str(path), frames=frames, extraction_fps=fps, fps=fps, source_image_weight=source_weight
            )
            await self._submit_deferred(interaction, spec, {"video": path}, limits)

    @imagine.autocomplete("model")
    async def _models(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        # from memory (autocomplete cannot defer), this server's default first
        default = self.settings.limits(interaction.guild_id).default_model
        ordered = sorted(self.config.models, key=lambda m: m != default)
        names = [m for m in ordered if current.lower() in m.lower()]
        return [app_commands.Choice(name=m, value=m) for m in names[:25]]

    # ---- buttons ---------------------------------------------------------------------------------

    async def follow_up(self, interaction: Interaction, job_id: int, action: str) -> None:
        """Reroll / Variation / Animate / Upscale: a new job owned by (and counted against) the clicker."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:  # another server's job answers as a missing one: its files never leave its server
            source = await self.render_queue.get(job_id, guild_id=interaction.guild_id)
        except JobNotFound:
            raise UserError(f"there is no job #{job_id}") from None
        if source.state is not JobStatus.DONE and action != "reroll":
            raise UserError(f"job #{job_id} has no finished result to start from")
        if (local := await self.render_queue.result_file(source)) is not None:  # rendered on another host
            source = dataclasses.replace(source, result_paths=(str(local), *source.result_paths[1:]))
        limits = self.settings.limits(interaction.guild_id)
        spec = self.derive(source, action, limits)
        inputs = {"init_image": Path(spec.init_image)} if spec.init_image and action != "reroll" else {}
        await self._submit_deferred(interaction, spec, inputs, limits)

    def derive(self, source: JobRecord, action: str, limits: ServerLimits) -> JobSpec:
        """The spec of the job a button starts from `source`."""
        spec = dataclasses.replace(source.spec, seed=None, max_bytes=None)
        result = source.result_paths[0] if source.result_paths else None
        if action == "reroll":
            return spec
        if result is None or not Path(result).exists():
            raise UserError(f"job #{source.id}'s result file is gone")
        if action == "vary":
            return dataclasses.replace(spec, kind=JobKind.IMAGE, init_image=result, frames=1)
        if action == "animate":
            base = dataclasses.replace(spec, kind=JobKind.ANIMATION, init_image=result)
            return job_options.animation(self.config, limits, base, frames=None, zoom=1.05, shift_x=0, shift_y=0)
        if action == "upscale":
            return JobSpec(
                kind=JobKind.UPSCALE,
                text_prompts=spec.text_prompts,
                init_image=result,
                width=spec.width,
                height=spec.height,
                iterations=1,
                upscale_model=TINY if spec.vqgan_model == TINY else DEFAULT_UPSCALER,  # tiny pairs with tiny
            )
        raise UserError("this button is no longer supported")

    # ---- building and submitting -------------------------------------------------------------------

    def _file_limits(self, limits: ServerLimits) -> attachments.Limits:
        return attachments.Limits(
            max_bytes=self.config.max_attachment_bytes,
            max_pixels=MAX_INPUT_PIXELS,
            max_video_seconds=limits.max_video_seconds,
            max_frames=limits.max_frames,
            timeout_s=self.config.file_check_seconds,
        )

    async def _fetch(
        self, interaction: Interaction, kind: str, attachment: discord.Attachment, role: str, limits: ServerLimits
    ) -> Path:
        path, _ = await attachments.fetch(
            kind,
            attachment,
            self.config.downloads_dir,
            f"{interaction.id}-{role}",
            self._file_limits(limits),
            self.file_checks,
        )
        return path

    async def _fetch_video(
        self, interaction: Interaction, video: discord.Attachment, limits: ServerLimits
    ) -> tuple[Path, attachments.FileInfo]:
        return await attachments.fetch(
            VIDEO,
            video,
            self.config.downloads_dir,
            f"{interaction.id}-video",
            self._file_limits(limits),
            self.file_checks,
        )

    @contextlib.asynccontextmanager
    async def _held(self, interaction: Interaction, limits: ServerLimits) -> AsyncIterator[None]:
        """The member's and the server's caps, checked (with the commands still being checked) before any download."""
        owner, _ = self._owner(interaction)
        queued = await self.render_queue.queued_counts(owner.user_id, owner.guild_id)
        with self.intake.hold(
            owner,
            queued,
            member_cap=limits.max_queued_per_member,
            member_cap_name=limits.limit_name("max_queued_per_member"),
            guild_cap=self.config.max_queued_per_guild,
        ):
            yield

    def _owner(self, interaction: Interaction) -> tuple[Owner, int]:
        limit = interaction.filesize_limit
        if interaction.guild is not None:
            limit = min(limit, interaction.guild.filesize_limit)
        return Owner(
            user_id=interaction.user.id, guild_id=interaction.guild_id, channel_id=interaction.channel_id
        ), limit

    async def _submit(
        self, interaction: Interaction, spec: JobSpec, inputs: dict[str, Path], limits: ServerLimits
    ) -> QueueEntry:
        job_options.check_rules(spec, limits)
        owner, limit = self._owner(interaction)
        started = time.monotonic()
        entry = await self.render_queue.submit(
            owner,
            spec,
            upload_limit=limit,
            inputs=inputs or None,
            interaction_id=interaction.id,
            max_queued_per_member=limits.max_queued_per_member,
        )
        log.info(
            "job %s queued: %s by member %s in guild %s, position %s (%.0f ms)",
            entry.job.id,
            spec.kind,
            owner.user_id,
            owner.guild_id,
            entry.position,
            (time.monotonic() - started) * 1000,
        )
        return entry

    async def _submit_fast(self, interaction: Interaction, spec: JobSpec, limits: ServerLimits) -> None:
        # usually a few milliseconds; deferred first when the database holds it up
        entry = await acks.in_time(
            interaction, self._submit(interaction, spec, {}, limits), self.config.ack_budget_seconds
        )
        await self._acknowledge(interaction, entry)

    async def _submit_deferred(
        self, interaction: Interaction, spec: JobSpec, inputs: dict[str, Path], limits: ServerLimits
    ) -> None:
        try:
            entry = await self._submit(interaction, spec, inputs, limits)
        finally:  # the queue keeps its own copy of a job's inputs
            await self._discard(inputs)
        await self._acknowledge(interaction, entry)

    async def _acknowledge(self, interaction: Interaction, entry: QueueEntry) -> None:
        """Tell the member (a failed ack loses nothing: the job is stored), then post the public status message."""
        try:
            await acks.answer(interaction, texts.ack_text(entry, time.time()))
        except discord.HTTPException as e:
            log.warning("job %s: the ack to member %s failed (HTTP %s)", entry.job.id, interaction.user.id, e.status)
        if not entry.duplicate:  # the first submit of this interaction posted it
            await self.status.post_status(entry.job, position=entry.position, eta_done_s=entry.eta_done_s)

    async def _discard(self, inputs: dict[str, Path]) -> None:
        """Delete the downloads among `inputs` (never a finished job's result a button started from)."""
        for path in inputs.values():
            if path.parent == self.config.downloads_dir:
                await asyncio.to_thread(path.unlink, missing_ok=True)
