"""The seed package's video tools, safely: frame extraction, MP4 encoding, audio copy and timelapses.

Signatures follow the seed's (docs/engine.md, "ffmpeg"); every ffmpeg call goes through
`engine.media.ffmpeg` as an argument list, opens its video inputs through `ffmpeg.input_args`,
has a time limit sized to its work (`ffmpeg.work_timeout`) and stops when the `cancel` event it is
given is set. Results are written to a working file of ours next to the output and renamed into
place only when complete, so a failure never leaves a half-written video.
No torch here. `engine.video_tools` is this module under the seed's name.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from engine.errors import InvalidJob
from engine.media import ffmpeg, probe, shrink, stills

log = logging.getLogger(__name__)

DEFAULT_DESCRIPTION = "Generated with vqbot (VQGAN+CLIP)"
FRAME_PATTERN = "frame_%012d.jpg"  # the seed's frame files; ffmpeg's image-sequence syntax
_OWN_FRAME = re.compile(r"frame_\d{12}\.jpg")
_STILL_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
MAX_FRAMERATE = 240.0
# Audio that MP4 players (browsers, Discord's preview) play when copied as is; anything else becomes AAC.
_PLAYABLE_MP4_AUDIO = {"aac", "mp3"}
_AAC = ["-c:a", "aac", "-b:a", "160k"]
# The seed's motion-interpolation settings, with the target rate appended.
MINTERPOLATE = "mi_mode=mci:me=hexbs:me_mode=bidir:mc_mode=aobmc:vsbmc=1:mb_size=8:search_param=32:fps={fps}"


def _check_rate(name: str, rate: float) -> float:
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise InvalidJob(f"{name} must be a number, not {rate!r}") from None
    if not 0 < value <= MAX_FRAMERATE:
        raise InvalidJob(f"{name} must be above 0 and at most {MAX_FRAMERATE:g} frames per second, not {rate!r}")
    return value


def _rate_arg(rate: float) -> str:
    return f"{rate:.6f}".rstrip("0").rstrip(".")


def extract_video_frames(
    input_video_path: str | os.PathLike[str],
    extraction_framerate: float,
    extracted_video_frames_path: str | os.PathLike[str],
    *,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Extract frames at `extraction_framerate` as `frame_%012d.jpg`; return their sorted paths.

    Creates the folder; removes only earlier `frame_*.jpg` files of ours there, nothing else.
    Raises `Cancelled` when `cancel` is set meanwhile.
    """
    rate = _check_rate("extraction_framerate", extraction_framerate)
    header = probe.probe_header(input_video_path, cancel=cancel)  # one-line InvalidJob for what is not a video
    folder = Path(extracted_video_frames_path)
    folder.mkdir(parents=True, exist_ok=True)
    remove_own_frames(folder)
    args = [
        *ffmpeg.input_args(input_video_path),
        "-map", "0:v:0",
        "-vf", f"fps={_rate_arg(rate)}",
        "-qscale:v", "2",  # near-lossless JPEG: these frames are the style transfer's targets
        "-start_number", "1",
        "-f", "image2",
        ffmpeg.pattern_arg(folder, FRAME_PATTERN),
    ]  # fmt: skip
    # a header without a duration says nothing of the work: allow for the longest video a job may have
    seconds = header.duration or 600.0
    timeout = ffmpeg.work_timeout(seconds * rate, header.width * header.height)
    ffmpeg.run(args, timeout=timeout, cancel=cancel, what="the video's frames could not be extracted")
    frames = sorted(str(p) for p in folder.glob("frame_*.jpg") if _OWN_FRAME.fullmatch(p.name))
    if not frames:
        raise InvalidJob(f"{Path(input_video_path).name}: no frames could be extracted from the video")
    log.info("extracted %d frames at %s fps from %s", len(frames), _rate_arg(rate), input_video_path)
    return frames


def frame_name(number: int) -> str:
    """The file name of frame `number` (1-based): `frame_000000000001.jpg`."""
    return FRAME_PATTERN % number


def remove_own_frames(folder: str | os.PathLike[str]) -> None:
    """Delete earlier `frame_%012d.jpg` files of ours in `folder`; nothing else there is touched."""
    for old in Path(folder).glob("frame_*.jpg"):
        if _OWN_FRAME.fullmatch(old.name):
            old.unlink()


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_stills(path_to_stills: str | os.PathLike[str]) -> list[Path]:
    """The still images in a folder in frame order (natural sort: 2.jpg before 10.jpg); hidden files skipped."""
    folder = Path(path_to_stills)
    if not folder.is_dir():
        raise InvalidJob(f"{folder.name}: not a folder of frames")
    stills = [p for p in folder.iterdir() if p.suffix.lower() in _STILL_SUFFIXES and not p.name.startswith(".")]
    return sorted(stills, key=_natural_key)


def _even_size(size: tuple[int, int]) -> tuple[int, int]:
    # H.264 in yuv420p needs even sides
    width, height = size
    return max(2, width - width % 2), max(2, height - height % 2)


def _fit_frame(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == size:
        return img
    width, height = img.size
    if width >= size[0] and height >= size[1] and (width - size[0], height - size[1]) <= (1, 1):
        return img.crop((0, 0, *size))  # an odd side: drop one row/column rather than resample
    return img.resize(size, Image.Resampling.LANCZOS)


def _raw_frames(paths: Sequence[Path], size: tuple[int, int]) -> Iterator[bytes]:
    for path in paths:
        try:
            with Image.open(path, formats=stills.FORMATS) as img:
                frame = _fit_frame(img.convert("RGB"), size).tobytes()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidJob(f"{path.name}: a frame that cannot be read as an image") from exc
        yield frame


def encode_video(
    output_file: str | os.PathLike[str],
    input_framerate: float,
    path_to_stills: str | os.PathLike[str] | None = None,
    output_framerate: float | None = None,
    metadata_title: str = "",
    metadata_comment: str = "",
    vcodec: str = "libx264",
    crf: int = 23,
    *,
    frames: Sequence[str | os.PathLike[str]] | None = None,
    max_bytes: int | None = None,
    description: str = DEFAULT_DESCRIPTION,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Encode stills (a folder, or `frames` in order) to an MP4: H.264 yuv420p, faststart, with metadata.

    When `output_framerate` differs from `input_framerate` the seed's `minterpolate` motion interpolation
    makes the in-between frames. With `max_bytes`, the result is re-encoded smaller until it fits.
    `timeout` defaults to `work_timeout` of the frames; `cancel` stops the encode (`Cancelled`).
    Returns the output path.
    """
    in_rate = _check_rate("input_framerate", input_framerate)
    out_rate = in_rate if output_framerate is None else _check_rate("output_framerate", output_framerate)
    if not 0 <= int(crf) <= 51:
        raise InvalidJob(f"crf must be between 0 and 51, not {crf!r}")
    pictures, size = _stills_to_encode(path_to_stills, frames)
    frames_out = max(1, round(len(pictures) * out_rate / in_rate))
    limit = timeout if timeout is not None else ffmpeg.work_timeout(frames_out, size[0] * size[1])
    output = Path(output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = ffmpeg.working_name(output.parent, ".mp4")
    try:
        args = [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}",
            "-framerate", _rate_arg(in_rate), "-i", "pipe:0",
            *_rate_args(in_rate, out_rate, len(pictures)),
            "-c:v", vcodec, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
            "-metadata", f"title={metadata_title}",
            "-metadata", f"comment={metadata_comment}",
            "-metadata", f"description={description}",
            "-movflags", "+faststart", "-f", "mp4", ffmpeg.file_arg(work),
        ]  # fmt: skip
        ffmpeg.run(
            args, stdin_chunks=_raw_frames(pictures, size), timeout=limit, cancel=cancel,
            what="the video could not be encoded",
        )  # fmt: skip
        if max_bytes is not None and work.stat().st_size > max_bytes:
            fitted = ffmpeg.working_name(output.parent, ".mp4")
            try:
                shrink.fit_video(work, max_bytes, fitted, cancel=cancel)
                os.replace(fitted, work)
            finally:
                fitted.unlink(missing_ok=True)
        os.replace(work, output)
    finally:
        work.unlink(missing_ok=True)
    log.info("encoded %d frames at %s→%s fps into %s", len(pictures), _rate_arg(in_rate), _rate_arg(out_rate), output)
    return str(output)


def _stills_to_encode(
    path_to_stills: str | os.PathLike[str] | None, frames: Sequence[str | os.PathLike[str]] | None
) -> tuple[list[Path], tuple[int, int]]:
    """The stills in order, and the frame size (even sides) of the first; InvalidJob when one is missing."""
    if frames is not None:
        pictures = [Path(p) for p in frames]
    elif path_to_stills is not None:
        pictures = list_stills(path_to_stills)
    else:
        raise InvalidJob("encode_video needs path_to_stills or frames")
    if not pictures:
        raise InvalidJob("there are no frames to encode")
    missing = [p.name for p in pictures if not p.is_file()]
    if missing:
        raise InvalidJob(f"frame file(s) not found: {', '.join(missing[:3])}")
    try:
        with Image.open(pictures[0], formats=stills.FORMATS) as first:
            return pictures, _even_size(first.size)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidJob(f"{pictures[0].name}: a frame that cannot be read as an image") from exc


def _rate_args(in_rate: float, out_rate: float, stills: int) -> list[str]:
    """ffmpeg's arguments from `stills` frames at `in_rate` to `out_rate`: the same rate, or motion-interpolated."""
    if out_rate == in_rate:
        return ["-r", _rate_arg(out_rate)]
    # minterpolate drops the last still's display time (the seed's videos came out short): repeat the
    # last still, then cut at the length the stills should last, so audio copied later stays in sync.
    interpolate = "tpad=stop_mode=clone:stop=2,minterpolate=" + MINTERPOLATE.format(fps=_rate_arg(out_rate))
    return ["-vf", interpolate, "-frames:v", str(max(1, round(stills * out_rate / in_rate)))]


def copy_video_audio(
    original_video: str | os.PathLike[str],
    destination_file_without_audio: str | os.PathLike[str],
    output_file: str | os.PathLike[str],
    *,
    cancel: threading.Event | None = None,
) -> str:
    """Mux the original's audio (if it has any) under the destination's video; a silent original works.

    AAC and MP3 audio is copied as is; anything else (or a failed copy) is re-encoded to AAC, so the
    result plays everywhere. Returns the output path; `Cancelled` when `cancel` is set meanwhile.
    """
    output = Path(output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    common = [
        *ffmpeg.input_args(destination_file_without_audio),
        *ffmpeg.input_args(original_video),
        "-map", "0:v:0", "-map", "1:a:0?",  # '?': no audio stream in the original is fine
        "-map_metadata", "0", "-c:v", "copy",
    ]  # fmt: skip
    try:
        header = ffmpeg.read_header(original_video, cancel=cancel)
        audio_codec, seconds = header.audio_codec, header.duration
    except ffmpeg.FFmpegError:
        audio_codec, seconds = "unknown", 0.0  # let ffmpeg itself report what is wrong with the file
    copy_first = audio_codec is None or audio_codec in _PLAYABLE_MP4_AUDIO
    # the video is copied; re-encoding the audio runs far faster than real time
    timeout = 120.0 + 2.0 * (seconds or 600.0)
    work = ffmpeg.working_name(output.parent, ".mp4")
    tail = ["-shortest", "-movflags", "+faststart", "-f", "mp4", ffmpeg.file_arg(work)]
    what = "the audio could not be copied"
    try:
        try:
            audio = ["-c:a", "copy"] if copy_first else _AAC
            ffmpeg.run([*common, *audio, *tail], timeout=timeout, cancel=cancel, what=what)
        except ffmpeg.FFmpegError as exc:
            if not copy_first:
                raise
            log.info("audio stream copy impossible (%s); re-encoding to AAC", exc.stderr_tail)
            ffmpeg.run([*common, *_AAC, *tail], timeout=timeout, cancel=cancel, what=what)
        os.replace(work, output)
    finally:
        work.unlink(missing_ok=True)
    return str(output)


def encode_with_audio(
    output: str | os.PathLike[str],
    rate: float,
    frames: Sequence[str | os.PathLike[str]],
    *,
    audio_from: str | os.PathLike[str] | None,
    work: Path,
    output_framerate: float | None = None,
    title: str = "",
    comment: str = "",
    max_bytes: int | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Encode `frames` into `output` with the audio of `audio_from` (None: silent), under `max_bytes` if given.

    With audio the silent encode gets the audio muxed in before the fit, so the budget counts the
    audio too. Every stage is written in the folder `work` (and removed again); `output` appears
    only when complete. `cancel` stops every step (`Cancelled`).
    """
    work.mkdir(parents=True, exist_ok=True)
    silent, with_audio, fitted = work / "silent.mp4", work / "with_audio.mp4", work / "fitted.mp4"
    try:
        encode_video(
            silent, rate, frames=frames, output_framerate=output_framerate, metadata_title=title,
            metadata_comment=comment, max_bytes=None if audio_from else max_bytes, cancel=cancel,
        )  # fmt: skip
        final = silent
        if audio_from is not None:
            final = Path(copy_video_audio(audio_from, silent, with_audio, cancel=cancel))
            if max_bytes is not None and final.stat().st_size > max_bytes:
                final = shrink.fit_video(final, max_bytes, fitted, cancel=cancel)
        move_into_place(final, Path(output))
    finally:
        for staged in (silent, with_audio, fitted):
            staged.unlink(missing_ok=True)


def move_into_place(source: Path, target: Path) -> None:
    """Rename `source` to `target`, also across file systems (a work folder elsewhere); `target` appears whole."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        staged = ffmpeg.working_name(target.parent, target.suffix)
        try:
            shutil.copyfile(source, staged)
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        source.unlink()


def make_timelapse(
    images: Sequence[str | os.PathLike[str]],
    output_file: str | os.PathLike[str],
    fps: float = 10.0,
    *,
    metadata_title: str = "",
    metadata_comment: str = "",
    max_bytes: int | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """A video of a still's saved iterations, in the given order, at `fps` frames per second."""
    return encode_video(
        output_file,
        fps,
        frames=images,
        metadata_title=metadata_title,
        metadata_comment=metadata_comment,
        max_bytes=max_bytes,
        cancel=cancel,
    )


def count_video_frames(path: str | os.PathLike[str]) -> int:
    """The number of frames in a video, by decoding it (no ffprobe)."""
    return probe.probe_video(path).frames


def video_duration(path: str | os.PathLike[str]) -> float:
    """A video's duration in seconds, by decoding it (no ffprobe)."""
    return probe.probe_video(path).seconds
