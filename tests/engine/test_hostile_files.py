"""Hostile files stay out: only MP4/MOV, Matroska/WebM, AVI and GIF videos and PNG, JPEG, WebP, GIF and
BMP stills are ever decoded, whatever a file is named; the rest is refused with one member-facing line."""

from __future__ import annotations

import io
import os
import re
import struct
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import InvalidJob
from engine.jobs import JobKind, JobSpec, Progress
from engine.media import ffmpeg, probe, stills, video_tools
from engine.pipelines import images
from engine.renderer import Renderer
from tests.support.mediafiles import make_video

VIDEO_REFUSAL = "is not a video file we accept (MP4/MOV, MKV/WebM, AVI or GIF)"
IMAGE_REFUSAL = "not an image file we accept (PNG, JPEG, WebP, GIF or BMP)"


@pytest.fixture(scope="module")
def real_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("real") / "real.mp4", seconds=1, fps=10)


def dash_manifest(path: Path, target: Path) -> Path:
    """A DASH manifest whose <BaseURL> is a local absolute path: a bare ffmpeg reads `target` through it."""
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT1S" '
        'minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
        '  <Period><AdaptationSet mimeType="video/mp4">\n'
        '    <Representation id="1" bandwidth="100000" width="64" height="48" codecs="avc1.64000a">\n'
        f"      <BaseURL>{target}</BaseURL><SegmentBase/>\n"
        "    </Representation>\n"
        "  </AdaptationSet></Period>\n"
        "</MPD>\n"
    )
    return path


def test_the_dash_manifest_is_a_real_threat_to_a_bare_ffmpeg(real_mp4: Path, tmp_path: Path) -> None:
    manifest = dash_manifest(tmp_path / "clip.mp4", real_mp4)
    # what the engine never does: let ffmpeg pick the demuxer
    bare = ffmpeg.run(["-i", ffmpeg.file_arg(manifest), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    assert len(bare.stdout) >= 64 * 48 * 3  # it followed <BaseURL> and decoded the pictures of the other file


def test_a_dash_manifest_named_mp4_is_refused_before_ffmpeg_opens_it(
    real_mp4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = dash_manifest(tmp_path / "clip.mp4", real_mp4)
    started: list[list[str]] = []
    real_execute = ffmpeg._execute

    def spy(argv: list[str], **kwargs: object) -> tuple[int, bytes, str]:
        started.append(argv)
        return real_execute(argv, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ffmpeg, "_execute", spy)
    with pytest.raises(InvalidJob, match=f"^{re.escape(f'clip.mp4 {VIDEO_REFUSAL}')}$"):
        probe.check_video(manifest)
    with pytest.raises(InvalidJob, match="not a video file we accept"):
        video_tools.extract_video_frames(manifest, 5, tmp_path / "frames")
    assert started == []  # not decoded: ffmpeg never ran
    assert not (tmp_path / "frames").exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("hls.mp4", "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{real}\n#EXT-X-ENDLIST\n"),
        ("concat.mp4", "ffconcat version 1.0\nfile '{real}'\n"),
        ("sequence.mp4", "frame_%03d.jpg\n"),
        ("garbage.mp4", "\x00\x01 not a video at all \x7f" * 10),
    ],
)
def test_manifests_scripts_and_garbage_named_mp4_are_refused(
    real_mp4: Path, tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content.format(real=real_mp4))
    with pytest.raises(InvalidJob, match=re.escape(VIDEO_REFUSAL)) as caught:
        probe.check_video(path)
    assert str(caught.value).startswith(name)
    assert str(tmp_path) not in str(caught.value)


def test_a_still_named_mp4_is_called_a_still(tmp_path: Path) -> None:
    for fmt in ("PNG", "JPEG", "WEBP", "BMP"):
        path = tmp_path / f"{fmt}.mp4"
        Image.new("RGB", (32, 32)).save(path, fmt)
        with pytest.raises(InvalidJob, match="still image, not a video"):
            probe.check_video(path)


def test_a_style_transfer_of_a_manifest_is_refused_before_any_step(
    renderer: Renderer, real_mp4: Path, tmp_path: Path
) -> None:
    manifest = dash_manifest(tmp_path / "clip.mp4", real_mp4)
    spec = JobSpec(
        kind=JobKind.STYLE_TRANSFER, text_prompts="oil", iterations=1, video=str(manifest), extraction_fps=4.0,
        fps=0.0, vqgan_model="tiny", clip_model="tiny", num_cuts=2, width=32, height=32,
    )  # fmt: skip
    seen: list[Progress] = []
    with pytest.raises(InvalidJob, match="not a video file we accept"):
        renderer.render(spec, tmp_path / "out.mp4", on_progress=seen.append)
    assert not seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize(
    ("container", "suffix", "codec"),
    [
        ("mp4", ".mp4", "libx264"),
        ("mov", ".mov", "libx264"),
        ("matroska", ".mkv", "libx264"),
        ("webm", ".webm", "libvpx-vp9"),
        ("avi", ".avi", "mpeg4"),
        ("gif", ".gif", "gif"),
    ],
)
def test_every_accepted_container_is_probed_and_extracted(
    tmp_path: Path, container: str, suffix: str, codec: str
) -> None:
    path = tmp_path / f"clip{suffix}"
    args = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1", "-c:v", codec]
    if codec == "libx264":
        args += ["-pix_fmt", "yuv420p"]
    ffmpeg.run([*args, "-f", container, ffmpeg.file_arg(path)])
    named_mp4 = tmp_path / "renamed.mp4"  # the name does not matter, the first bytes do
    os.link(path, named_mp4)
    for candidate in (path, named_mp4):
        info = probe.check_video(candidate)
        assert (info.width, info.height) == (64, 48)
        assert info.frames == 10
    assert len(video_tools.extract_video_frames(path, 5, tmp_path / "frames")) == 5


# -- stills ------------------------------------------------------------------------------------------


def _psd(width: int = 16, height: int = 16) -> bytes:
    """A minimal RGB Photoshop file (header, empty sections, raw planes) that Pillow itself can read."""
    header = b"8BPS" + struct.pack(">H", 1) + b"\0" * 6 + struct.pack(">HIIHH", 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0)
    return header + sections + bytes([200]) * (width * height) + bytes(width * height) * 2


def _saved(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: _saved("EPS"), id="EPS"),  # decoding an EPS would run Ghostscript
        pytest.param(_psd, id="PSD"),
        pytest.param(lambda: _saved("TIFF"), id="TIFF"),
        pytest.param(lambda: _saved("JPEG2000"), id="JPEG2000"),
    ],
)
def test_other_image_formats_named_png_are_refused(tmp_path: Path, content: object) -> None:
    data = content()  # type: ignore[operator]
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)):  # Pillow left to itself would open it
        pass
    with pytest.raises(InvalidJob, match=re.escape(IMAGE_REFUSAL)) as caught:
        probe.check_image(path)
    assert str(caught.value) == f"picture.png: {IMAGE_REFUSAL}"
    with pytest.raises(InvalidJob, match=r"^init image picture\.png: not an image file we accept"):
        images.load_rgb(path, "init image")


def test_an_eps_init_image_is_refused_before_a_render_starts(renderer: Renderer, tmp_path: Path) -> None:
    path = tmp_path / "init.png"
    path.write_bytes(_saved("EPS"))
    spec = JobSpec(text_prompts="a cat", init_image=str(path), iterations=1, vqgan_model="tiny", clip_model="tiny",
                   num_cuts=2, width=32, height=32)  # fmt: skip
    with pytest.raises(InvalidJob, match=r"init image init\.png: not an image file we accept") as caught:
        renderer.render(spec, tmp_path / "out.png")
    assert str(tmp_path) not in str(caught.value)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_the_accepted_formats_still_open_whatever_their_name(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "picture.bin"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(path, fmt)
    assert probe.check_image(path) == (40, 30)
    assert images.load_rgb(path).size == (40, 30)


def test_truncated_and_garbage_stills_are_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole.png"
    Image.effect_noise((64, 64), 50).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:-600])
    with pytest.raises(InvalidJob, match=r"^cut\.png: not an image that can be read \(truncated or corrupt\)$"):
        probe.check_image(cut)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff" + os.urandom(300))
    with pytest.raises(InvalidJob, match=r"garbage\.jpg: not an image"):
        probe.check_image(garbage)


def test_decoding_a_still_is_bounded_in_pixels_and_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    monkeypatch.setattr(stills, "MAX_PIXELS", 100 * 100)  # the bound holds even when the caller asks for none
    with pytest.raises(InvalidJob, match=r"200×100 is more than the 10,000 pixels allowed"):
        images.load_rgb(path)
    monkeypatch.undo()
    with pytest.raises(InvalidJob, match="took longer than"):
        stills.decode_still(path, timeout=-1.0)  # a deadline already past: the first read stops the decode
    assert stills.decode_still(path).size == (200, 100)
