"""Short test media made with the bundled ffmpeg's lavfi sources (seconds, not minutes), and hostile names."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from engine.media import ffmpeg

# File names that broke the seed package's shell strings: spaces, quotes, ';', non-ASCII, a leading '-'.
HOSTILE_NAMES = (
    "my clip.mp4",
    'it\'s "quoted".mp4',
    "a;rm -rf x.mp4",
    "vidéo 動画.mp4",
    "-leading dash.mp4",
    "100% $(x) `y`.mp4",
)


def make_video(
    path: Path,
    *,
    seconds: float = 2.0,
    fps: int = 30,
    size: tuple[int, int] = (64, 48),
    audio: str | None = None,  # None: silent; else an audio codec such as "aac" or "pcm_s16le"
    container: str = "mp4",
) -> Path:
    """A testsrc pattern video, optionally with a sine tone, written to `path`."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size[0]}x{size[1]}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", audio]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", container, ffmpeg.file_arg(path)]
    ffmpeg.run(args)
    return path


def make_stills(folder: Path, count: int, size: tuple[int, int] = (64, 48), suffix: str = ".jpg") -> list[Path]:
    """`count` distinct solid-colour frames named frame_000000000001.jpg, ... in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        colour = (index * 37 % 256, index * 91 % 256, 255 - index * 53 % 256)
        path = folder / f"frame_{index + 1:012d}{suffix}"
        Image.new("RGB", size, colour).save(path)
        paths.append(path)
    return paths
