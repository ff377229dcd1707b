"""The job spec travels as JSON through storage and comes back equal."""

from __future__ import annotations

import pytest

from engine.jobs import JobKind, JobSpec, spec_from_json, spec_to_json


def test_spec_round_trips_through_json() -> None:
    spec = JobSpec(kind=JobKind.ANIMATION, text_prompts="a ^ b", frames=6, change_prompts_on_frame=(3,), seed=7)
    assert spec_from_json(spec_to_json(spec)) == spec


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown job parameter"):
        spec_from_json('{"kind": "image", "iterationz": 3}')
