"""`tiny_spec`: a small still-image job on the tiny preset, for the engine's tests."""

from __future__ import annotations

from engine.jobs import JobSpec


def tiny_spec(**changes: object) -> JobSpec:
    """A small still-image job on the tiny preset; `changes` replace its fields."""
    values: dict[str, object] = {
        "text_prompts": "a red apple",
        "width": 64,
        "height": 64,
        "iterations": 3,
        "seed": 5,
        "vqgan_model": "tiny",
        "clip_model": "tiny",
        "num_cuts": 4,
    }
    values.update(changes)
    return JobSpec(**values)  # type: ignore[arg-type]
