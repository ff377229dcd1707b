"""/imagine, /animate, /style and the buttons that start new jobs: validate → JobSpec → submit → ack."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from bot import attachments, texts, views
from bot.config import BotConfig, clip_for
from bot.delivery.status import StatusMessages
from bot.errors import BadInput, UserError
from bot.queue.api import JobNotFound, QueueEntry, RenderQueue
from bot.queue.inputs import escape_path
from engine import prompts
from engine.errors import InvalidJob
from engine.jobs import DEFAULT_UPSCALER, TINY, JobKind, JobSpec, JobStatus
from storage.records import JobRecord, Owner

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

Size = app_commands.Range[int, 16, 2048]
Iterations = app_commands.Range[int, 1, 5000]
Seed = app_commands.Range[int, 0, 2**32 - 1]
Prompt = app_commands.Range[str, 1, 1000]
MAX_INPUT_PIXELS = 4096 * 4096


def check_prompt(text: str) -> None:
    """Refuse a prompt the engine could not parse, naming the part."""
    try:
        prompts.validate(text=text)
    except InvalidJob as e:
        raise BadInput(f"prompt: {e}") from None


def check_size(config: BotConfig, width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not 16 <= value <= config.max_size:
            raise BadInput(f"{name} must be between 16 and {config.max_size} pixels, got {value}")


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadInput(f"{name} must be between {low:g} and {high:g}, got {value:g}")


class GenerateCog(commands.Cog):
    """Commands that create render jobs: submitted to `queue`, announced through `status`."""

    def __init__(self, queue: RenderQueue, status: StatusMessages, config: BotConfig) -> None:
        self.render_queue, self.status, self.config = queue, status, config

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
        spec = self._base_spec(JobKind.IMAGE, prompt, width, height, iterations, seed, model)
        if init_image is None and image_prompt is None:
            await self._submit_fast(interaction, spec)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        inputs: dict[str, Path] = {}
        try:
            if init_image is not None:
                inputs["init_image"] = await attachments.fetch_image(
                    init_image, self.config.downloads_dir, f"{interaction.id}-init", self._limits()
                )
                spec = dataclasses.replace(spec, init_image=str(inputs["init_image"]))
            if image_prompt is not None:
                inputs["image_prompts"] = await attachments.fetch_image(
                    image_prompt, self.config.downloads_dir, f"{interaction.id}-prompt", self._limits()
                )
                spec = dataclasses.replace(spec, image_prompts=escape_path(inputs["image_prompts"]))
        except BaseException:  # the second attachment was refused: the first one's download goes too
            await self._discard(inputs)
            raise
        await self._submit_deferred(interaction, spec, inputs)

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
        spec = self._base_spec(JobKind.ANIMATION, prompt, width, height, iterations_per_frame, seed, None)
        spec = self._animation(spec, frames, zoom if zoom is not None else 1.05, shift_x, shift_y, iterations_per_frame)
        if init_image is None:
            await self._submit_fast(interaction, spec)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        path = await attachments.fetch_image(
            init_image, self.config.downloads_dir, f"{interaction.id}-init", self._limits()
        )
        await self._submit_deferred(interaction, dataclasses.replace(spec, init_image=str(path)), {"init_image": path})

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
        spec = self._base_spec(JobKind.STYLE_TRANSFER, prompt, width, height, iterations_per_frame, seed, None)
        check_range("fps", fps, 0.5, 30.0)
        check_range("source_weight", source_weight, 0.0, 10.0)
        await interaction.response.defer(ephemeral=True, thinking=True)
        path, duration = await attachments.fetch_video(
            video, self.config.downloads_dir, f"{interaction.id}-video", self._limits()
        )
        frames = max(1, math.ceil(duration * fps))
        if frames > self.config.max_frames:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise BadInput(
                f"{duration:.1f} s at {fps:g} fps is {frames} frames; the limit is {self.config.max_frames}; lower fps or trim the video"
            )
        spec = dataclasses.replace(
            spec, video=str(path), frames=frames, extraction_fps=fps, fps=fps, source_image_weight=source_weight
        )
        await self._submit_deferred(interaction, spec, {"video": path})

    @imagine.autocomplete("model")
    async def _models(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = [m for m in self.config.models if current.lower() in m.lower()]
        return [app_commands.Choice(name=m, value=m) for m in names[:25]]

    # ---- buttons ---------------------------------------------------------------------------------

    async def follow_up(self, interaction: Interaction, job_id: int, action: str) -> None:
        """Reroll / Variation / Animate / Upscale: a new job owned by (and counted against) the clicker."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            source = await self.render_queue.get(job_id)
        except JobNotFound:
            raise UserError(f"job #{job_id} no longer exists") from None
        if source.state is not JobStatus.DONE and action != "reroll":
            raise UserError(f"job #{job_id} has no finished result to start from")
        spec = self.derive(source, action)
        inputs = {"init_image": Path(spec.init_image)} if spec.init_image and action != "reroll" else {}
        await self._submit_deferred(interaction, spec, inputs)

    def derive(self, source: JobRecord, action: str) -> JobSpec:
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
            return self._animation(base, None, 1.05, 0, 0, None)
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

    def _limits(self) -> attachments.Limits:
        return attachments.Limits(
            max_bytes=self.config.max_attachment_bytes,
            max_pixels=MAX_INPUT_PIXELS,
            max_video_seconds=self.config.max_video_seconds,
            max_frames=self.config.max_frames,
        )

    def _base_spec(
        self,
        kind: JobKind,
        prompt: str,
        width: int | None,
        height: int | None,
        iterations: int | None,
        seed: int | None,
        model: str | None,
    ) -> JobSpec:
        # Discord does not re-check Range on receipt: every bound is checked again here (docs/discord.md, "Messages").
        config = self.config
        check_prompt(prompt)
        width, height = width or config.default_size, height or config.default_size
        check_size(config, width, height)
        iterations = iterations if iterations is not None else config.default_iterations
        check_range("iterations", iterations, 1, config.max_iterations)
        if seed is not None:
            check_range("seed", seed, 0, 2**32 - 1)
        model = model or config.models[0]
        if model not in config.models:
            raise BadInput(f"unknown model {model!r}; choose one of: {', '.join(config.models)}")
        return JobSpec(
            kind=kind,
            text_prompts=prompt,
            width=width,
            height=height,
            iterations=iterations,
            seed=seed,
            vqgan_model=model,
            clip_model=clip_for(model),
            num_cuts=config.num_cuts,
        )

    def _animation(
        self, spec: JobSpec, frames: int | None, zoom: float, shift_x: int, shift_y: int, per_frame: int | None
    ) -> JobSpec:
        config = self.config
        frames = frames if frames is not None else min(config.default_frames, config.max_frames)
        check_range("frames", frames, 2, config.max_frames)
        check_range("zoom", zoom, 0.5, 2.0)
        check_range("shift_x", shift_x, -64, 64)
        check_range("shift_y", shift_y, -64, 64)
        if frames * spec.iterations > config.max_iterations * config.max_frames:
            raise BadInput("frames × iterations_per_frame is too large")
        return dataclasses.replace(
            spec, frames=frames, zoom=zoom, shift_x=shift_x, shift_y=shift_y, fps=min(30.0, max(1.0, frames / 4))
        )

    def _owner(self, interaction: Interaction) -> tuple[Owner, int]:
        limit = interaction.filesize_limit
        if interaction.guild is not None:
            limit = min(limit, interaction.guild.filesize_limit)
        return Owner(
            user_id=interaction.user.id, guild_id=interaction.guild_id, channel_id=interaction.channel_id
        ), limit

    async def _submit(self, interaction: Interaction, spec: JobSpec, inputs: dict[str, Path]) -> QueueEntry:
        owner, limit = self._owner(interaction)
        started = time.monotonic()
        entry = await self.render_queue.submit(owner, spec, upload_limit=limit, inputs=inputs or None)
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

    async def _submit_fast(self, interaction: Interaction, spec: JobSpec) -> None:
        entry = await self._submit(interaction, spec, {})
        await interaction.response.send_message(texts.ack_text(entry, time.time()), ephemeral=True)
        await self.status.post_status(entry.job, position=entry.position, eta_done_s=entry.eta_done_s)

    async def _submit_deferred(self, interaction: Interaction, spec: JobSpec, inputs: dict[str, Path]) -> None:
        try:
            entry = await self._submit(interaction, spec, inputs)
        finally:  # the queue keeps its own copy of a job's inputs
            await self._discard(inputs)
        await interaction.edit_original_response(content=texts.ack_text(entry, time.time()))
        await self.status.post_status(entry.job, position=entry.position, eta_done_s=entry.eta_done_s)

    async def _discard(self, inputs: dict[str, Path]) -> None:
        """Delete the downloads among `inputs` (never a finished job's result a button started from)."""
        for path in inputs.values():
            if path.parent == self.config.downloads_dir:
                await asyncio.to_thread(path.unlink, missing_ok=True)
