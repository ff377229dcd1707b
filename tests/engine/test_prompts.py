"""Prompt parsing: the seed's syntax, and a clear error naming the part for everything malformed."""

from __future__ import annotations

import math
import sys

import pytest

from engine.errors import PromptError
from engine.prompts import (
    PromptType,
    WeightedPrompt,
    count_tokens,
    normalise_prompt_argument,
    parse_all,
    parse_prompts,
    validate,
)


def test_parallel_parts_with_weights_are_stripped() -> None:
    phrases = parse_prompts("A pastoral landscape by Rembrandt:1.0 | A blue fence:0.1")
    assert phrases == (
        (
            WeightedPrompt(text="A pastoral landscape by Rembrandt", weight=1.0),
            WeightedPrompt(text="A blue fence", weight=0.1),
        ),
    )


def test_series_phrases_negative_weights_and_stops() -> None:
    phrases = parse_prompts("a red apple:1 | blurry:-0.5:-1 ^ a pear:2:0.5")
    assert len(phrases) == 2
    assert phrases[0][1] == WeightedPrompt(text="blurry", weight=-0.5, stop=-1.0)
    assert phrases[1][0] == WeightedPrompt(text="a pear", weight=2.0, stop=0.5)
    assert math.isinf(phrases[0][0].stop)


def test_no_prompt_is_no_phrases() -> None:
    assert parse_prompts("") == ()
    assert parse_all().empty


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a cat:abc", "weight must be a number, got 'abc'"),
        ("a cat:", "nothing after ':'"),
        ("a::0.3", "weight must be a number"),
        (":0.5", "empty prompt"),
        ("a || b", "part 2 (''): empty prompt"),
        ("a ^ ^ b", "phrase 2, part 1 (''): empty prompt"),
        ("a cat:nan", "weight must be finite"),
        ("a cat:inf", "weight must be finite"),
        ("Time: 12:30", "stop 30 can never be reached"),
        ("a sign: hello", "'\\:'"),
        ("a:b:c:0.5", "too many ':'"),
        ("bad:-1:0.5", "negative weight the stop must be below 0"),
    ],
)
def test_malformed_prompts_name_the_part_and_problem(prompt: str, message: str) -> None:
    with pytest.raises(PromptError, match="text prompt, phrase") as info:
        parse_prompts(prompt)
    assert message in str(info.value)


def test_escaped_colon_is_literal() -> None:
    assert parse_prompts(r"Time\: 12\:30:2") == ((WeightedPrompt(text="Time: 12:30", weight=2.0),),)


def test_image_prompt_with_a_drive_letter_on_any_os() -> None:
    assert parse_prompts(r"C:\img.jpg:0.5", PromptType.IMAGE) == ((WeightedPrompt(text="C:\\img.jpg", weight=0.5),),)


def test_image_urls_are_refused() -> None:
    with pytest.raises(PromptError, match="URLs are not supported"):
        parse_prompts("https://x/a.png:0.5", PromptType.IMAGE)


def test_noise_prompts_are_integers_below_2_64() -> None:
    assert parse_prompts("123:0.1|234:0.2^700", PromptType.NOISE)[1] == (WeightedPrompt(text="700"),)
    for bad in ("abc", str(2**64), "-3"):
        with pytest.raises(PromptError, match="noise prompt must be an integer"):
            parse_prompts(bad, PromptType.NOISE)


def test_phrase_past_the_end_stays_on_the_last() -> None:
    parsed = parse_all(text="a ^ b", noise="1")
    assert parsed.phrase_count == 2
    assert parsed.phrase(5)[0] == (WeightedPrompt(text="b"),)
    assert parsed.phrase(5)[2] == (WeightedPrompt(text="1"),)


def test_seed_argument_forms() -> None:
    assert normalise_prompt_argument([], "text_prompts") == ""
    assert normalise_prompt_argument(None, "text_prompts") == ""
    assert normalise_prompt_argument("a", "text_prompts") == "a"
    with pytest.raises(ValueError, match="text_prompts must be a string"):
        normalise_prompt_argument(["a"], "text_prompts")


def test_text_longer_than_clip_reads_is_refused_with_its_count() -> None:
    assert count_tokens("a red apple") == 3
    with pytest.raises(PromptError, match=r"\d+ tokens, CLIP reads at most 75"):
        validate(text="apple " * 80)


def test_validation_does_not_import_torch() -> None:
    validate(text="a red apple")
    if "torch" not in sys.modules:  # other tests may have imported it already
        assert "clip" not in sys.modules
