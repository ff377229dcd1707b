"""The seed's video tools on short lavfi clips: frame counts, encoding, interpolation, audio, hostile names."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from engine.errors import InvalidJob
from engine.media import ffmpeg, probe, video_tools
from tests.support.mediafiles import HOSTILE_NAMES, make_stills, make_video


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "clip.mp4", seconds=2, fps=30, audio="aac")


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "silent.mp4", seconds=2, fps=30)


@pytest.mark.parametrize(("rate", "expected"), [(30, 60), (4, 8), (7.5, 15)])
def test_extraction_gives_the_frames_of_the_requested_rate(
    clip_with_audio: Path, tmp_path: Path, rate: float, expected: int
) -> None:
    frames = video_tools.extract_video_frames(clip_with_audio, rate, tmp_path / "frames")
    assert len(frames) == expected
    assert frames == sorted(frames)
    assert Path(frames[0]).name == "frame_000000000001.jpg"
    with Image.open(frames[-1]) as img:
        assert img.size == (64, 48)


def test_extraction_replaces_its_own_frames_and_keeps_other_files(clip_with_audio: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    (folder / "frame_keep.jpg").write_bytes(b"not ours")
    assert len(video_tools.extract_video_frames(clip_with_audio, 30, folder)) == 60
    frames = video_tools.extract_video_frames(clip_with_audio, 2, folder)
    assert len(frames) == 4
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("frame_0")) == [Path(f).name for f in frames]
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (folder / "frame_keep.jpg").read_bytes() == b"not ours"


def test_extraction_of_a_text_file_is_a_one_line_error(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(InvalidJob, match="not a video") as caught:
        video_tools.extract_video_frames(fake, 4, tmp_path / "frames")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "frames").exists() or not any((tmp_path / "frames").iterdir())


def test_encode_at_30_fps_keeps_every_frame_as_h264_yuv420p(tmp_path: Path) -> None:
    make_stills(tmp_path / "stills", 10)
    out = video_tools.encode_video(tmp_path / "out.mp4", 30, tmp_path / "stills")
    info = probe.probe_video(out)
    header = ffmpeg.read_header(out)
    assert (info.frames, info.fps, info.codec, header.pix_fmt) == (10, 30.0, "h264", "yuv420p")
    assert info.seconds == pytest.approx(10 / 30, abs=0.02)


def test_encode_at_60_fps_plain_and_from_30_with_minterpolate(tmp_path: Path) -> None:
    make_stills(tmp_path / "stills", 10)
    plain = probe.probe_video(video_tools.encode_video(tmp_path / "plain.mp4", 60, tmp_path / "stills", 60))
    assert (plain.frames, plain.fps) == (10, 60.0)
    smooth = probe.probe_video(video_tools.encode_video(tmp_path / "smooth.mp4", 30, tmp_path / "stills", 60))
    assert smooth.fps == 60.0
    assert smooth.frames == 20  # the in-between frames were made, and the last still keeps its time
    assert smooth.seconds == pytest.approx(10 / 30, abs=0.01)


@pytest.mark.parametrize(("in_rate", "out_rate", "expected"), [(4, 30, 75), (30, 24, 8)])
def test_interpolation_keeps_the_length_of_the_stills(
    tmp_path: Path, in_rate: int, out_rate: int, expected: int
) -> None:
    make_stills(tmp_path / "stills", 10)
    info = probe.probe_video(video_tools.encode_video(tmp_path / "out.mp4", in_rate, tmp_path / "stills", out_rate))
    assert (info.frames, info.fps) == (expected, out_rate)
    assert info.seconds == pytest.approx(10 / in_rate, abs=0.01)


def _row(path: str) -> list[int]:
    with Image.open(path) as img:
        grey = img.convert("L")
        return [grey.getpixel((x, 64)) for x in range(32, 80)]


def test_interpolation_makes_in_between_frames(tmp_path: Path) -> None:
    stills = []
    for index, left in enumerate((40, 56, 56)):  # a small bright square moves 16 px, then rests
        img = Image.new("RGB", (128, 128), (0, 0, 0))
        img.paste((240, 240, 240), (left, 56, left + 16, 72))
        stills.append(tmp_path / f"{index}.png")
        img.save(stills[-1])
    out = video_tools.encode_video(tmp_path / "out.mp4", 1, frames=stills, output_framerate=4)
    rows = [_row(f) for f in video_tools.extract_video_frames(out, 4, tmp_path / "frames")]
    assert len(rows) == 12

    def distance(a: list[int], b: list[int]) -> float:
        return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)

    start, end = rows[0], rows[4]
    assert distance(start, end) > 50
    # frames 2-4 are new pictures, unlike both stills (a plain -r 4 would repeat them)
    assert all(min(distance(row, start), distance(row, end)) > 10 for row in rows[1:4])


def test_the_mp4_is_faststart_with_its_metadata(tmp_path: Path) -> None:
    make_stills(tmp_path / "stills", 3)
    title = "a forest ^ a city; 'quoted' \"twice\" — ünïcode 🌲"
    comment = "seed: 7, prompts: a|b:0.5\nsecond line $(rm -rf /)"
    out = video_tools.encode_video(tmp_path / "out.mp4", 10, tmp_path / "stills", None, title, comment)
    tags = ffmpeg.read_tags(out)
    assert tags["title"] == title
    assert tags["comment"] == comment
    assert tags["description"] == video_tools.DEFAULT_DESCRIPTION
    data = Path(out).read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_explicit_frames_are_encoded_in_the_given_order_and_odd_sizes_are_made_even(tmp_path: Path) -> None:
    red, blue = tmp_path / "b_red.png", tmp_path / "a_blue.png"
    Image.new("RGB", (65, 49), (250, 0, 0)).save(red)
    Image.new("RGB", (65, 49), (0, 0, 250)).save(blue)
    out = video_tools.encode_video(tmp_path / "out.mp4", 2, frames=[red, blue])
    info = probe.probe_video(out)
    assert (info.width, info.height, info.frames) == (64, 48, 2)
    first = video_tools.extract_video_frames(out, 2, tmp_path / "frames")[0]
    r, _, b = Image.open(first).convert("RGB").getpixel((32, 24))
    assert r > 150 > b


def test_frames_of_other_sizes_are_resized_to_the_first(tmp_path: Path) -> None:
    small, big = tmp_path / "1.png", tmp_path / "2.png"
    Image.new("RGB", (64, 48), "red").save(small)
    Image.new("RGB", (128, 96), "blue").save(big)
    info = probe.probe_video(video_tools.encode_video(tmp_path / "out.mp4", 5, tmp_path))
    assert (info.width, info.height, info.frames) == (64, 48, 2)


def test_stills_are_taken_in_natural_order(tmp_path: Path) -> None:
    for name in ("10.png", "2.png", "1.png", ".vqbot-hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in video_tools.list_stills(tmp_path)] == ["1.png", "2.png", "10.png"]


def test_encode_fits_under_max_bytes(tmp_path: Path) -> None:
    noise = [tmp_path / f"{i}.png" for i in range(15)]
    for index, path in enumerate(noise):
        Image.effect_noise((160, 120), 60 + index).convert("RGB").save(path)
    unbounded = Path(video_tools.encode_video(tmp_path / "big.mp4", 15, frames=noise, crf=0))
    limit = unbounded.stat().st_size // 3
    out = Path(video_tools.encode_video(tmp_path / "small.mp4", 15, frames=noise, crf=0, max_bytes=limit))
    assert out.stat().st_size <= limit
    assert probe.probe_video(out).frames == 15
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["big.mp4", "small.mp4"]  # no working files left


def test_audio_copy_gives_an_audio_stream(clip_with_audio: Path, tmp_path: Path) -> None:
    make_stills(tmp_path / "stills", 8)
    silent = video_tools.encode_video(tmp_path / "styled.mp4", 4, tmp_path / "stills", None, "title", "comment")
    out = video_tools.copy_video_audio(clip_with_audio, silent, tmp_path / "with audio.mp4")
    info = probe.probe_video(out)
    assert info.has_audio
    assert info.frames == 8
    assert ffmpeg.read_tags(out)["title"] == "title"  # the video's metadata survives the mux


def test_audio_mp4_cannot_play_is_re_encoded_to_aac(tmp_path: Path) -> None:
    source = make_video(tmp_path / "pcm.mkv", audio="pcm_s16le", container="matroska")
    make_stills(tmp_path / "stills", 4)
    silent = video_tools.encode_video(tmp_path / "styled.mp4", 2, tmp_path / "stills")
    out = video_tools.copy_video_audio(source, silent, tmp_path / "out.mp4")
    assert ffmpeg.read_header(out).audio_codec == "aac"


def test_a_silent_source_works(silent_clip: Path, tmp_path: Path) -> None:
    make_stills(tmp_path / "stills", 4)
    silent = video_tools.encode_video(tmp_path / "styled.mp4", 2, tmp_path / "stills")
    out = video_tools.copy_video_audio(silent_clip, silent, tmp_path / "out.mp4")
    info = probe.probe_video(out)
    assert not info.has_audio
    assert info.frames == 4


def test_audio_copy_may_write_over_its_own_input(clip_with_audio: Path, tmp_path: Path) -> None:
    make_stills(tmp_path / "stills", 4)
    video = video_tools.encode_video(tmp_path / "styled.mp4", 2, tmp_path / "stills")
    video_tools.copy_video_audio(clip_with_audio, video, video)
    assert probe.probe_video(video).has_audio
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["styled.mp4"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_work_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    folder = tmp_path / name.removesuffix(".mp4")  # the folder is hostile too
    folder.mkdir()
    make_video(folder / name, seconds=1, audio="aac")
    monkeypatch.chdir(folder)  # relative names, as a user would type them: "-leading dash.mp4" stays a file
    frames = video_tools.extract_video_frames(name, 5, "-frames " + name)  # an output folder with a dash
    assert len(frames) == 5
    encoded = video_tools.encode_video("out " + name, 5, "-frames " + name, None, name, name)
    final = video_tools.copy_video_audio(name, encoded, name.removesuffix(".mp4") + " final.mp4")
    info = probe.probe_video(final)
    assert (info.frames, info.has_audio) == (5, True)
    assert ffmpeg.read_tags(final)["title"] == name
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(
        [name, "out " + name, name.removesuffix(".mp4") + " final.mp4"]
    )


def test_timelapse_of_saved_iterations(tmp_path: Path) -> None:
    steps = make_stills(tmp_path / "steps", 6, suffix=".png")
    out = video_tools.make_timelapse(steps, tmp_path / "timelapse.mp4", fps=6, metadata_title="a red apple")
    info = probe.probe_video(out)
    assert (info.frames, info.fps) == (6, 6.0)
    assert ffmpeg.read_tags(out)["title"] == "a red apple"


def test_frame_count_and_duration_without_ffprobe(clip_with_audio: Path) -> None:
    assert video_tools.count_video_frames(clip_with_audio) == 60
    assert video_tools.video_duration(clip_with_audio) == pytest.approx(2.0, abs=0.05)


def test_ffmpeg_failures_say_what_failed_log_why_and_leave_nothing_behind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_stills(tmp_path / "stills", 2)
    with pytest.raises(ffmpeg.FFmpegError, match=r"^the video could not be encoded$") as caught:
        video_tools.encode_video(tmp_path / "out.mp4", 2, tmp_path / "stills", vcodec="no_such_codec")
    assert "Unknown encoder" in caught.value.stderr_tail  # ffmpeg's words: for the log, not the member
    assert "Unknown encoder" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["stills"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_framerate": 0}, "input_framerate"),
        ({"input_framerate": "fast"}, "input_framerate"),
        ({"input_framerate": 30, "output_framerate": 1000}, "output_framerate"),
        ({"input_framerate": 30, "crf": 60}, "crf"),
    ],
)
def test_bad_encode_settings_are_refused_before_ffmpeg_runs(tmp_path: Path, kwargs: dict, message: str) -> None:
    make_stills(tmp_path / "stills", 2)
    with pytest.raises(InvalidJob, match=message):
        video_tools.encode_video(tmp_path / "out.mp4", path_to_stills=tmp_path / "stills", **kwargs)
    assert not (tmp_path / "out.mp4").exists()


def test_an_empty_folder_has_nothing_to_encode(tmp_path: Path) -> None:
    with pytest.raises(InvalidJob, match="no frames"):
        video_tools.encode_video(tmp_path / "out.mp4", 10, tmp_path)


def test_an_unreadable_frame_is_a_clear_error_and_leaves_no_video(tmp_path: Path) -> None:
    stills = make_stills(tmp_path / "stills", 3)
    stills[1].write_text("not a picture")
    with pytest.raises(InvalidJob, match=r"frame_000000000002\.jpg"):
        video_tools.encode_video(tmp_path / "out.mp4", 3, tmp_path / "stills")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stills"]
