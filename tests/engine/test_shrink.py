"""Fitting stills and videos under an upload limit: always under, still playable, original untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import InvalidJob
from engine.media import ffmpeg, probe, shrink


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def noisy_png(tmp_path: Path) -> Path:
    path = tmp_path / "render result.png"
    Image.merge("RGB", [Image.effect_noise((384, 256), 90 + i * 10) for i in range(3)]).save(path)
    return path


@pytest.fixture(scope="module")
def heavy_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of noisy 256×192 video with audio, encoded near-losslessly so it is far too big to post."""
    path = tmp_path_factory.mktemp("src") / "heavy clip.mp4"
    args = [
        "-f", "lavfi", "-i", "testsrc=size=256x192:rate=24:duration=2,noise=alls=40:allf=t",
        "-f", "lavfi", "-i", "sine=frequency=330:duration=2",
        "-c:v", "libx264", "-crf", "4", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k",
        "-f", "mp4", ffmpeg.file_arg(path),
    ]  # fmt: skip
    ffmpeg.run(args)
    return path


def test_a_png_too_big_becomes_a_jpeg_under_the_limit(noisy_png: Path, tmp_path: Path) -> None:
    before = _digest(noisy_png)
    limit = noisy_png.stat().st_size // 4
    out = shrink.fit_image(noisy_png, limit, tmp_path / "out")
    assert out.stat().st_size <= limit
    assert out.suffix == ".jpg"
    with Image.open(out) as img:
        assert img.size == (384, 256)  # quality alone was enough
        img.load()
    assert _digest(noisy_png) == before


def test_a_tiny_limit_shrinks_the_picture_until_it_fits(noisy_png: Path, tmp_path: Path) -> None:
    out = shrink.fit_image(noisy_png, 3000, tmp_path)
    assert out.stat().st_size <= 3000
    with Image.open(out) as img:
        assert img.width < 384
        assert img.width / img.height == pytest.approx(1.5, rel=0.1)
    assert noisy_png.exists()
    assert out != noisy_png


def test_transparency_is_kept_as_webp(tmp_path: Path) -> None:
    path = tmp_path / "cutout.png"
    rgba = Image.effect_noise((256, 256), 80).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((256, 256)))
    rgba.save(path)
    out = shrink.fit_image(path, path.stat().st_size // 3, tmp_path / "out")
    with Image.open(out) as img:
        assert (img.format, img.mode) == ("WEBP", "RGBA")


def test_an_image_that_fits_is_returned_untouched(noisy_png: Path, tmp_path: Path) -> None:
    assert shrink.fit_image(noisy_png, noisy_png.stat().st_size, tmp_path) == noisy_png


def test_an_absurd_image_limit_is_refused(noisy_png: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidJob, match="cannot be fitted"):
        shrink.fit_image(noisy_png, 100, tmp_path)


@pytest.mark.parametrize("share", [0.25, 0.08])
def test_a_video_too_big_is_re_encoded_under_the_limit_and_plays(
    heavy_clip: Path, tmp_path: Path, share: float
) -> None:
    before = _digest(heavy_clip)
    limit = int(heavy_clip.stat().st_size * share)
    out = shrink.fit_video(heavy_clip, limit, tmp_path / "fitted.mp4")
    assert out.stat().st_size <= limit
    info = probe.probe_video(out)
    header = ffmpeg.read_header(out)
    assert info.has_audio
    assert (info.codec, header.pix_fmt) == ("h264", "yuv420p")
    assert info.seconds == pytest.approx(2.0, abs=0.1)
    assert (info.width % 2, info.height % 2) == (0, 0)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart
    assert _digest(heavy_clip) == before
    assert [p.name for p in tmp_path.iterdir()] == ["fitted.mp4"]  # no working files left


def test_a_video_that_fits_is_copied_as_is(heavy_clip: Path, tmp_path: Path) -> None:
    out = shrink.fit_video(heavy_clip, heavy_clip.stat().st_size, tmp_path / "same.mp4")
    assert _digest(out) == _digest(heavy_clip)


def test_an_absurd_video_limit_is_refused(heavy_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidJob, match="cannot be fitted"):
        shrink.fit_video(heavy_clip, 1000, tmp_path / "out.mp4")


def test_a_jpeg_keeps_its_exif_while_quality_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "render.jpg"
    exif = Image.Exif()
    exif[0x0131] = "vqbot"
    Image.merge("RGB", [Image.effect_noise((256, 256), 80 + i) for i in range(3)]).save(
        path, quality=100, exif=exif.tobytes()
    )
    out = shrink.fit_image(path, path.stat().st_size // 2, tmp_path / "out")
    with Image.open(out) as img:
        assert img.size == (256, 256)
        assert img.getexif()[0x0131] == "vqbot"
