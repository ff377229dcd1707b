"""The one place that starts ffmpeg: imageio-ffmpeg's bundled binary, argument lists only, never a shell.

No system ffmpeg or ffprobe is needed: `imageio-ffmpeg` ships a static ffmpeg with libx264, AAC and
`minterpolate`, and what ffprobe would say is read from ffmpeg's own input dump. Every path handed to ffmpeg goes through
`file_arg`, so a user's file name that starts with '-', holds spaces, quotes, ';', ':' or non-ASCII
characters is read as a file name and nothing else.
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
from collections.abc import Iterable, Sequence
from pathlib import Path

import imageio_ffmpeg

from engine.errors import EngineError

log = logging.getLogger(__name__)

# Global flags on every call: no banner, never read the terminal, only real errors on stderr.
BASE_ARGS = ("-hide_banner", "-nostdin", "-y", "-loglevel", "error")
STDERR_TAIL_LINES = 5


class FFmpegError(EngineError):
    """ffmpeg exited with an error; the message ends with the last lines it wrote to stderr."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(f"{message}: {stderr_tail}" if stderr_tail else message)
        self.stderr_tail = stderr_tail


@dataclasses.dataclass(frozen=True, slots=True)
class FFmpegResult:
    """What a finished ffmpeg run left behind: its stdout bytes and its (error-level) stderr text."""

    stdout: bytes
    stderr: str


@functools.cache
def ffmpeg_exe() -> str:
    """The path of the bundled ffmpeg binary."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def file_arg(path: str | os.PathLike[str]) -> str:
    """A path as an unambiguous ffmpeg file argument: absolute, behind the `file:` protocol.

    Absolute, so a name starting with '-' is never read as an option; `file:`, so a name holding ':'
    is never read as another protocol (`concat:`, `http:` ...).
    """
    return "file:" + os.path.abspath(os.fspath(path))


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
    timeout: float | None = None,
    what: str = "ffmpeg",
) -> FFmpegResult:
    """Run ffmpeg with `args` (after the global flags); raise FFmpegError with stderr's tail on failure.

    `stdin_chunks` are written to ffmpeg's stdin (for `-i pipe:`). stderr goes to a temporary file,
    not a pipe, so a chatty ffmpeg can never block while we write its input.
    """
    argv = [ffmpeg_exe(), *BASE_ARGS, *args]
    if stdin_chunks is not None:
        argv.remove("-nostdin")
    log.debug("ffmpeg %s", argv[1:])
    with tempfile.TemporaryFile() as err_file, tempfile.TemporaryFile() as out_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin_chunks is not None else subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
        )
        try:
            if stdin_chunks is not None:
                assert proc.stdin is not None
                try:
                    for chunk in stdin_chunks:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # ffmpeg stopped reading: its exit status and stderr say why
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise FFmpegError(f"{what} took longer than {timeout:g} s and was stopped") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err_file.seek(0)
        stderr = err_file.read().decode("utf-8", errors="replace")
        out_file.seek(0)
        stdout = out_file.read()
    if returncode != 0:
        raise FFmpegError(f"{what} failed (exit status {returncode})", _tail(stderr))
    return FFmpegResult(stdout=stdout, stderr=stderr)


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


def read_header(path: str | os.PathLike[str]) -> Header:
    """The header of a video file, read from ffmpeg's input dump (no ffprobe, no frames decoded).

    Raises FFmpegError when ffmpeg cannot open the file or it holds no video stream.
    """
    # Without an output ffmpeg exits 1 after dumping the input at info level; that is expected.
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", "-i", file_arg(path)]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    dump = proc.stderr.decode("utf-8", errors="replace")
    if "Input #0" not in dump:
        raise FFmpegError("not a readable video", _tail(dump, 2))
    video_line = next((line for line in dump.splitlines() if _VIDEO.search(line)), None)
    if video_line is None:
        raise FFmpegError("no video stream in the file")
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


def decode_video(path: str | os.PathLike[str], *, timeout: float | None = None) -> DecodeReport:
    """Decode every frame of the first video stream (counting frames and time) without writing anything."""
    args = ["-progress", "pipe:1", "-nostats", "-i", file_arg(path), "-map", "0:v:0", "-f", "null", "-"]
    result = run(args, timeout=timeout, what="decoding the video")
    frames, micros = 0, 0
    for line in result.stdout.decode("ascii", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key == "frame" and value.strip().isdigit():
            frames = int(value)
        elif key == "out_time_us" and value.strip().lstrip("-").isdigit():
            micros = max(0, int(value))
    return DecodeReport(frames=frames, seconds=micros / 1e6, errors=_tail(result.stderr))


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The container-level metadata tags of a media file (title, comment, ...), keys lower-cased."""
    result = run(["-i", file_arg(path), "-f", "ffmetadata", "-"], what="reading metadata")
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
