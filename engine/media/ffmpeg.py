"""The one place that starts ffmpeg: imageio-ffmpeg's bundled binary, argument lists only, never a shell.

No system ffmpeg or ffprobe is needed: `imageio-ffmpeg` ships a static ffmpeg with libx264, AAC and
`minterpolate`, and what ffprobe would say is read from ffmpeg's own input dump. Every path handed
to ffmpeg goes through `file_arg`, so a user's file name that starts with '-', holds spaces, quotes,
';', ':' or non-ASCII characters is read as a file name and nothing else; every file ffmpeg reads is opened through
`input_args` (the file protocol only, a demuxer from `containers`). Every run has a time limit and
stops within about a second when its job's cancel event is set. A failure's message is for the
member ("the video could not be decoded"); ffmpeg's own words and the paths go to the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import imageio_ffmpeg

from engine.errors import Cancelled, EngineError
from engine.media import containers

log = logging.getLogger(__name__)

# Global flags on every call: no banner, never read the terminal, only real errors on stderr.
BASE_ARGS = ("-hide_banner", "-nostdin", "-y", "-loglevel", "error")
STDERR_TAIL_LINES = 5
# Without a better figure from the caller, a call may take this long; header reads are quick or broken.
DEFAULT_TIMEOUT_S = 600.0
HEADER_TIMEOUT_S = 60.0
_POLL_S = 0.1  # how often a running ffmpeg is checked for cancel and its deadline
_TERMINATE_GRACE_S = 1.0  # between asking ffmpeg to stop (SIGTERM) and killing it


class FFmpegError(EngineError):
    """ffmpeg failed or took too long; the message is for the member, `stderr_tail` for the log and fallbacks."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


@dataclasses.dataclass(frozen=True, slots=True)
class FFmpegResult:
    """What a finished ffmpeg run left behind: its stdout bytes and its (error-level) stderr text."""

    stdout: bytes
    stderr: str


@functools.cache
def ffmpeg_exe() -> str:
    """The path of the bundled ffmpeg binary (imageio-ffmpeg honours IMAGEIO_FFMPEG_EXE)."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def work_timeout(frames: float, pixels: int = 1920 * 1080) -> float:
    """A generous time limit for ffmpeg work over `frames` frames of `pixels` each: a safety net
    against a hung ffmpeg, far above what the work takes (two minutes, plus per frame half a second
    and a second per megapixel)."""
    return 120.0 + max(0.0, frames) * (0.5 + pixels / 1e6)


def file_arg(path: str | os.PathLike[str]) -> str:
    """A path as an unambiguous ffmpeg file argument: absolute, behind the `file:` protocol.

    Absolute, so a name starting with '-' is never read as an option; `file:`, so a name holding ':'
    is never read as another protocol (`concat:`, `http:` ...).
    """
    return "file:" + os.path.abspath(os.fspath(path))


def input_args(path: str | os.PathLike[str]) -> list[str]:
    """`-i path` for a video file, safely: only the file protocol, only the demuxer its first bytes name.

    InvalidJob (member-facing) when the file is not one of the accepted containers.
    """
    demuxer = containers.demuxer_for(path)
    return [
        "-protocol_whitelist", "file", "-format_whitelist", containers.FORMAT_WHITELIST,
        "-f", demuxer, "-i", file_arg(path),
    ]  # fmt: skip


def pattern_arg(folder: str | os.PathLike[str], pattern: str) -> str:
    """An image-sequence pattern (such as `frame_%012d.jpg`) inside `folder`, with '%' in the folder escaped."""
    return file_arg(folder).replace("%", "%%") + os.sep + pattern


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def run(
    args: Sequence[str],
    *,
    stdin_chunks: Iterable[bytes] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    cancel: threading.Event | None = None,
    what: str = "the media file could not be processed",
) -> FFmpegResult:
    """Run ffmpeg with `args` (after the global flags); FFmpegError(`what`) on failure, detail in the log.

    `stdin_chunks` are written to ffmpeg's stdin (for `-i pipe:`) from a helper thread, so a stuck
    ffmpeg can still be stopped. `timeout` (None: no limit) and `cancel` stop it: SIGTERM, then
    SIGKILL a second later; a cancel raises `Cancelled`.
    """
    argv = [ffmpeg_exe(), *BASE_ARGS, *args]
    if stdin_chunks is not None:
        argv.remove("-nostdin")
    returncode, stdout, stderr = _execute(argv, stdin_chunks=stdin_chunks, timeout=timeout, cancel=cancel, what=what)
    if returncode != 0:
        tail = _tail(stderr)
        log.warning("%s: ffmpeg exit status %d: %s (arguments %s)", what, returncode, tail, argv[1:])
        raise FFmpegError(what, tail)
    return FFmpegResult(stdout=stdout, stderr=stderr)


def _execute(
    argv: list[str],
    *,
    stdin_chunks: Iterable[bytes] | None,
    timeout: float | None,
    cancel: threading.Event | None,
    what: str,
) -> tuple[int, bytes, str]:
    """Start ffmpeg, feed it, wait for it within `timeout` and `cancel`; (exit status, stdout, stderr)."""
    log.debug("ffmpeg %s", argv[1:])
    deadline = None if timeout is None else time.monotonic() + timeout
    # stderr and stdout go to temporary files, not pipes, so a chatty ffmpeg never blocks on them
    with tempfile.TemporaryFile() as err_file, tempfile.TemporaryFile() as out_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin_chunks is not None else subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
        )
        feed_errors: list[BaseException] = []
        feeder = None
        if stdin_chunks is not None:
            assert proc.stdin is not None
            feeder = threading.Thread(
                target=_feed, args=(proc.stdin, stdin_chunks, feed_errors), name="ffmpeg-stdin", daemon=True
            )
            feeder.start()
        try:
            returncode = _wait(proc, deadline, cancel, feed_errors)
        except subprocess.TimeoutExpired:
            log.warning("%s: ffmpeg stopped after %s s (arguments %s)", what, timeout, argv[1:])
            raise FFmpegError(f"{what}: it took longer than {timeout:g} s") from None
        except Cancelled:
            log.info("ffmpeg stopped: the job was cancelled (arguments %s)", argv[1:])
            raise
        finally:
            if proc.poll() is None:
                _stop(proc)
            if feeder is not None:
                feeder.join()
        if feed_errors:
            raise feed_errors[0]  # the frames could not be produced (an unreadable still, ...)
        err_file.seek(0)
        stderr = err_file.read().decode("utf-8", errors="replace")
        out_file.seek(0)
        stdout = out_file.read()
    return returncode, stdout, stderr


def _feed(stdin: IO[bytes], chunks: Iterable[bytes], errors: list[BaseException]) -> None:
    try:
        for chunk in chunks:
            try:
                stdin.write(chunk)
            except OSError:
                return  # ffmpeg stopped reading (or was stopped): its exit status says why
    except BaseException as exc:  # the frames could not be made: the waiting thread raises it
        errors.append(exc)
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _wait(
    proc: subprocess.Popen[bytes],
    deadline: float | None,
    cancel: threading.Event | None,
    feed_errors: list[BaseException],
) -> int:
    """ffmpeg's exit status; TimeoutExpired past `deadline`, Cancelled on `cancel`, a feeder's error at once."""
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=_POLL_S)
        if feed_errors:
            raise feed_errors[0]
        if cancel is not None and cancel.is_set():
            raise Cancelled("the job was cancelled")
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, 0)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask ffmpeg to stop, then kill it if it has not within a second."""
    proc.terminate()
    try:
        proc.wait(timeout=_TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """What ffmpeg's input dump says about a file's first video stream (and whether it has audio)."""

    width: int
    height: int
    fps: float  # 0.0 when the container does not say
    duration: float  # seconds; 0.0 when the container does not say
    codec: str
    pix_fmt: str
    audio_codec: str | None  # None for a silent file
    container: str  # ffmpeg's demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "png_pipe" for a still


_INPUT = re.compile(r"Input #0, ([^ ]+), from")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #0:\d+.*?: Video: (\w+)")
_AUDIO = re.compile(r"Stream #0:\d+.*?: Audio: (\w+)")
_PIX_FMT = re.compile(r": Video: [^,]+?(?:\([^)]*\))*, (\w+)")
_SIZE = re.compile(r", (\d{1,6})x(\d{1,6})[, \[]")
_FPS = re.compile(r", (\d+(?:\.\d+)?)k? (?:fps|tbr)")


def read_header(path: str | os.PathLike[str], *, cancel: threading.Event | None = None) -> Header:
    """The header of a video file, read from ffmpeg's input dump (no ffprobe, no frames decoded).

    Raises InvalidJob for a file that is not an accepted container (`input_args`), FFmpegError when
    ffmpeg cannot open it or it holds no video stream.
    """
    # Without an output ffmpeg exits 1 after dumping the input at info level; that is expected.
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", *input_args(path)]
    what = "the file could not be read as a video"
    _, _, dump = _execute(argv, stdin_chunks=None, timeout=HEADER_TIMEOUT_S, cancel=cancel, what=what)
    if "Input #0" not in dump:
        log.info("%s: %s (arguments %s)", what, _tail(dump, 2), argv[1:])
        raise FFmpegError(what, _tail(dump, 2))
    video_line = next((line for line in dump.splitlines() if _VIDEO.search(line)), None)
    if video_line is None:
        raise FFmpegError("the file holds no video")
    size = _SIZE.search(video_line)
    fps = _FPS.search(video_line)
    duration = _DURATION.search(dump)
    audio = _AUDIO.search(dump)
    container = _INPUT.search(dump)
    pix_fmt = _PIX_FMT.search(video_line)
    codec = _VIDEO.search(video_line)
    assert codec is not None  # video_line was chosen for matching it
    hours, minutes, seconds = duration.groups() if duration else ("0", "0", "0")
    return Header(
        width=int(size.group(1)) if size else 0,
        height=int(size.group(2)) if size else 0,
        fps=float(fps.group(1)) if fps else 0.0,
        duration=int(hours) * 3600 + int(minutes) * 60 + float(seconds),
        codec=codec.group(1),
        pix_fmt=pix_fmt.group(1) if pix_fmt else "",
        audio_codec=audio.group(1) if audio else None,
        container=container.group(1) if container else "",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DecodeReport:
    """The result of decoding a video's first video stream to nowhere."""

    frames: int
    seconds: float
    errors: str  # the decoder's error lines, "" for a clean file


def decode_video(
    path: str | os.PathLike[str], *, timeout: float | None = DEFAULT_TIMEOUT_S, cancel: threading.Event | None = None
) -> DecodeReport:
    """Decode every frame of the first video stream (counting frames and time) without writing anything."""
    args = ["-progress", "pipe:1", "-nostats", *input_args(path), "-map", "0:v:0", "-f", "null", "-"]
    result = run(args, timeout=timeout, cancel=cancel, what="the video could not be decoded")
    frames, micros = 0, 0
    for line in result.stdout.decode("ascii", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key == "frame" and value.strip().isdigit():
            frames = int(value)
        elif key == "out_time_us" and value.strip().lstrip("-").isdigit():
            micros = max(0, int(value))
    return DecodeReport(frames=frames, seconds=micros / 1e6, errors=_tail(result.stderr))


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The container-level metadata tags of a video file (title, comment, ...), keys lower-cased."""
    args = [*input_args(path), "-f", "ffmetadata", "-"]
    result = run(args, timeout=HEADER_TIMEOUT_S, what="the video's metadata could not be read")
    return _parse_ffmetadata(result.stdout.decode("utf-8", errors="replace"))


def _parse_ffmetadata(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    # Backslash escapes '=', ';', '#', '\\' and newlines; a line ending in a lone backslash continues.
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("[") or line.startswith(";") or "=" not in line:
            if line.startswith("["):
                break  # stream/chapter sections follow the global tags
            continue
        while _ends_with_escape(line) and i < len(lines):
            line = line[:-1] + "\n" + lines[i]
            i += 1
        key, value = _split_unescaped(line)
        tags[key.lower()] = value
    return tags


def _ends_with_escape(line: str) -> bool:
    stripped = line.rstrip("\\")
    return (len(line) - len(stripped)) % 2 == 1


def _split_unescaped(line: str) -> tuple[str, str]:
    key: list[str] = []
    value: list[str] = []
    target = key
    escaped = False
    for char in line:
        if escaped:
            target.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=" and target is key:
            target = value
        else:
            target.append(char)
    return "".join(key), "".join(value)


def working_name(folder: str | os.PathLike[str], suffix: str) -> Path:
    """A fresh file name of ours in `folder` (never derived from a user's file name)."""
    handle, name = tempfile.mkstemp(prefix=".vqbot-", suffix=suffix, dir=folder)
    os.close(handle)
    return Path(name)
