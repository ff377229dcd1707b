"""The engine's error types. Standard library only, so the bot and storage can catch them cheaply."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of everything the engine raises on purpose."""


class InvalidJob(EngineError, ValueError):
    """A job's parameters or inputs are wrong; the message is safe to show to the user who sent them."""


class PromptError(InvalidJob):
    """A prompt string does not parse; the message names the part and the problem."""


class ModelLoadError(EngineError):
    """A model could not be downloaded, verified or loaded; the message is for the operator."""


class OutOfMemory(EngineError):
    """The device ran out of memory for this job; the message says what to make smaller."""


class Cancelled(EngineError):
    """The job was cancelled before it had anything to show (e.g. while its source video was being read)."""


class StaleCheckpoint(InvalidJob):
    """A checkpoint cannot be resumed (its saved frames are gone or changed); render the job again from the start."""
