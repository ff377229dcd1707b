"""Prompt syntax: `^` separates series phrases, `|` parallel parts, each part is `body[:weight[:stop]]`.

Parsed once into typed values (docs/engine.md, "Prompts"). Standard library only, so the bot can validate a
prompt before it accepts a job. Every error names the part, its position and the problem.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Protocol

from engine.errors import PromptError

# The spherical distance is 2·arcsin(|a−b|/2)², at most π²/2; a stop at or above it never triggers.
MAX_DISTANCE = math.pi**2 / 2
MAX_TEXT_TOKENS = 75  # CLIP's 77-token context less the start and end tokens
MAX_NOISE_SEED = 2**64

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_UNESCAPED_COLON = re.compile(r"(?<!\\):")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FOLDERS = re.compile(r"^.*[\\/]")  # everything up to a path's last separator


class PromptType(enum.StrEnum):
    TEXT = "text"
    IMAGE = "image"
    NOISE = "noise"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WeightedPrompt:
    """One part: a text, an image path or a noise seed (as text), its weight and its stop."""

    text: str
    weight: float = 1.0
    stop: float = float("-inf")


Phrase = tuple[WeightedPrompt, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedPrompts:
    """The three prompt kinds, each a tuple of series phrases."""

    text: tuple[Phrase, ...] = ()
    image: tuple[Phrase, ...] = ()
    noise: tuple[Phrase, ...] = ()

    @property
    def phrase_count(self) -> int:
        """How many series phrases the longest prompt kind has."""
        return max(len(self.text), len(self.image), len(self.noise))

    def phrase(self, index: int) -> tuple[Phrase, Phrase, Phrase]:
        """The text, image and noise parts of phrase `index`; past the end, the last phrase (the seed's rule)."""

        def pick(phrases: tuple[Phrase, ...]) -> Phrase:
            return phrases[min(index, len(phrases) - 1)] if phrases else ()

        return pick(self.text), pick(self.image), pick(self.noise)

    @property
    def empty(self) -> bool:
        return not (self.text or self.image or self.noise)


def normalise_prompt_argument(value: object, name: str) -> str:
    """The seed's argument forms: a string, or `[]`/`None` for none. Anything else is a ValueError."""
    if value is None or (isinstance(value, list | tuple) and len(value) == 0):
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def parse_prompts(prompt: str, kind: PromptType = PromptType.TEXT) -> tuple[Phrase, ...]:
    """Parse one prompt string into phrases of weighted parts; "" gives no phrases."""
    if not prompt.strip():
        return ()
    phrases = []
    for p_index, phrase_text in enumerate(prompt.split("^"), start=1):
        parts = []
        for part_index, raw in enumerate(phrase_text.split("|"), start=1):
            shown = raw.strip() if kind is not PromptType.IMAGE else _FOLDERS.sub("", raw.strip())  # no host folders
            where = f"{kind} prompt, phrase {p_index}, part {part_index} ({shown!r})"
            parts.append(_parse_part(raw.strip(), kind, where))
        phrases.append(tuple(parts))
    return tuple(phrases)


def parse_all(text: str = "", image: str = "", noise: str = "") -> ParsedPrompts:
    """Parse the three prompt kinds at once."""
    return ParsedPrompts(
        text=parse_prompts(text, PromptType.TEXT),
        image=parse_prompts(image, PromptType.IMAGE),
        noise=parse_prompts(noise, PromptType.NOISE),
    )


def escape_body(text: str) -> str:
    """`text` as the body of a prompt part: colons escaped, so they are not read as a weight."""
    return text.replace(":", "\\:")


def rename_image_parts(prompt: str, rename: Callable[[str], str]) -> str:
    """An image prompt with each part's file replaced by `rename(file)`; weights and stops kept as written.

    Results name their input files without folders (`rename` = the file name), and a replay puts the
    folder where it found them back in. `prompt` must parse (`parse_prompts`).
    """
    if not prompt.strip():
        return prompt
    phrases = []
    for phrase_text in prompt.split("^"):
        parts = []
        for raw in phrase_text.split("|"):
            part, prefix = raw.strip(), ""
            if _DRIVE.match(part):  # as in _parse_part: a drive's colon is not a weight
                prefix, part = part[:3], part[3:]
            fields = _UNESCAPED_COLON.split(part, maxsplit=1)
            body = prefix + fields[0].replace("\\:", ":").strip()
            weights = ":" + fields[1] if len(fields) > 1 else ""
            parts.append(escape_body(rename(body)) + weights)
        phrases.append(" | ".join(parts))
    return " ^ ".join(phrases)


def _parse_part(part: str, kind: PromptType, where: str) -> WeightedPrompt:
    if not part:
        raise PromptError(f"{where}: empty prompt")
    prefix = ""
    if kind is PromptType.IMAGE:
        if _URL.match(part):
            raise PromptError(f"{where}: URLs are not supported; give a local file (attach it to the command)")
        if _DRIVE.match(part):  # C:\img.jpg on every OS
            prefix, part = part[:3], part[3:]
    fields = _UNESCAPED_COLON.split(part)
    if len(fields) > 3:
        raise PromptError(
            f"{where}: too many ':' ({len(fields) - 1}); a part is body:weight:stop, write a literal colon as '\\:'"
        )
    body = prefix + fields[0].replace("\\:", ":").strip()
    if not body.strip() or body == prefix:
        raise PromptError(f"{where}: empty prompt")
    weight = _number(fields[1], "weight", where) if len(fields) > 1 else 1.0
    stop = _number(fields[2], "stop", where, allow_minus_inf=True) if len(fields) > 2 else float("-inf")
    if not math.isfinite(weight):
        raise PromptError(f"{where}: weight must be finite, got {fields[1].strip()!r}")
    if weight > 0 and stop >= MAX_DISTANCE:
        raise PromptError(f"{where}: stop {stop:g} can never be reached (distances are below {MAX_DISTANCE:.2f})")
    if weight < 0 and stop >= 0:
        raise PromptError(f"{where}: with a negative weight the stop must be below 0, got {stop:g}")
    if kind is PromptType.NOISE and (not re.fullmatch(r"\d+", body) or int(body) >= MAX_NOISE_SEED):
        raise PromptError(f"{where}: a noise prompt must be an integer, 0 ≤ n < 2^64")
    return WeightedPrompt(text=body, weight=weight, stop=stop)


def _number(field: str, name: str, where: str, allow_minus_inf: bool = False) -> float:
    text = field.strip()
    if allow_minus_inf and text.lower() == "-inf":
        return float("-inf")
    if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise PromptError(f"{where}: {name} must be finite, got {text!r}")
    if not _NUMBER.fullmatch(text):
        hint = "" if text else " (nothing after ':')"
        raise PromptError(
            f"{where}: {name} must be a number, got {text!r}{hint}; write a literal colon in a prompt as '\\:'"
        )
    value = float(text)
    if not math.isfinite(value):
        raise PromptError(f"{where}: {name} must be finite, got {text!r}")
    return value


@functools.cache
def _simple_tokenizer_module() -> ModuleType:
    """CLIP's BPE tokenizer module, loaded from the clip package without importing torch."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise PromptError("the clip package is not installed; cannot count prompt tokens")
    location = next(iter(spec.submodule_search_locations))
    file_spec = importlib.util.spec_from_file_location("_clip_simple_tokenizer", f"{location}/simple_tokenizer.py")
    if file_spec is None or file_spec.loader is None:
        raise PromptError("cannot load CLIP's tokenizer")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


@functools.cache
def _tokenizer() -> _Tokenizer:
    tokenizer: _Tokenizer = _simple_tokenizer_module().SimpleTokenizer()
    return tokenizer


def count_tokens(text: str) -> int:
    """How many BPE tokens CLIP's tokenizer makes of `text`, without the start and end tokens."""
    return len(_tokenizer().encode(text))


def check_text_lengths(phrases: Sequence[Phrase]) -> None:
    """Refuse a text part longer than CLIP's context, naming it and its token count."""
    for p_index, phrase in enumerate(phrases, start=1):
        for part_index, part in enumerate(phrase, start=1):
            n = count_tokens(part.text)
            if n > MAX_TEXT_TOKENS:
                raise PromptError(
                    f"text prompt, phrase {p_index}, part {part_index}: {n} tokens, CLIP reads at most "
                    f"{MAX_TEXT_TOKENS}; shorten it"
                )


def validate(text: str = "", image: str = "", noise: str = "") -> ParsedPrompts:
    """Parse all prompts and check text lengths: everything that can be said before a model loads."""
    parsed = parse_all(text, image, noise)
    check_text_lengths(parsed.text)
    return parsed
