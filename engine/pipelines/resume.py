"""Job checkpoints: the one codec for what `Progress.checkpoint()` returns and `render(resume=...)` takes.

A checkpoint is a `torch.save`d dict that `torch.load(..., weights_only=True)` reads back: plain
containers, numbers, strings, bytes and CPU tensors only. Every kind of job writes the same header
(`version`, `seed`, `spec` as JSON) plus its own sections: `state` and `global_rng` for the
optimisation, `timelapse` for a still's timelapse frames, `video` for the frame loop, `upscale` for
an upscaled video's frames (docs/engine.md, "Seeds, determinism and resume"). Frames are named by
file name and SHA-256; their files stay in the job's work folder (`workspace.FrameStore`).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch

from engine.errors import InvalidJob, StaleCheckpoint
from engine.jobs import JobSpec, spec_from_json, spec_to_json
from engine.optim.rng import global_rng_state, set_global_rng_state
from engine.optim.state import OptimisationState

CHECKPOINT_VERSION = 2  # 2: frames are named (file name, SHA-256), their bytes stay in the work folder

# the section a kind of job must find in its checkpoint, and how a refusal names that kind
_SECTION_OWNERS = {"video": "a video job's", "upscale": "an upscale job's"}


def encode_checkpoint(spec: JobSpec, seed: int, sections: dict[str, Any]) -> bytes:
    """The checkpoint of `spec` (rendered with `seed`) holding `sections`, as bytes."""
    payload = {"version": CHECKPOINT_VERSION, "seed": seed, "spec": spec_to_json(spec), **sections}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def optimisation_sections(state: OptimisationState) -> dict[str, Any]:
    """The sections that let an optimisation continue exactly: its state and the process RNG's."""
    return {"state": state.state_dict(), "global_rng": global_rng_state()}


def restore_optimisation(state: OptimisationState, checkpoint: dict[str, Any]) -> None:
    """Put back what `optimisation_sections` saved (the prompt targets are the caller's)."""
    state.load_state_dict(checkpoint["state"])
    set_global_rng_state(checkpoint["global_rng"])


def decode_checkpoint(data: bytes, spec: JobSpec, *, section: str | None = None) -> dict[str, Any]:
    """The checkpoint in `data`, checked to belong to `spec` (and to hold `section`); InvalidJob otherwise."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign blob: the job cannot resume from it
        raise InvalidJob(f"the saved job state cannot be read ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("version") != CHECKPOINT_VERSION:
        # e.g. a job checkpointed before an upgrade: the caller can render it again from the start
        raise StaleCheckpoint("the saved job state is from another engine version")
    saved = dataclasses.replace(spec_from_json(checkpoint["spec"]), seed=None)
    if saved != dataclasses.replace(spec, seed=None):
        raise InvalidJob("the saved job state belongs to a different job")
    if spec.seed is not None and spec.seed != checkpoint["seed"]:
        raise InvalidJob("the saved job state has a different seed")
    if section is not None and not isinstance(checkpoint.get(section), dict):
        raise InvalidJob(f"the saved job state is not {_SECTION_OWNERS[section]}")
    return checkpoint
