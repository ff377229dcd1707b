"""No host path reaches Discord: every byte the fake received is searched for the data directory and the temp dir.

The bot runs the real engine (the tiny preset on the CPU) so the result files carry the engine's own
metadata: PNG text chunks, MP4 metadata. Texts, embeds and refusals are the bot's and must be clean;
the metadata inside result files is the engine's.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from tests.support.bot_harness import ALICE, BOB, Harness, make_config, reply_with, running_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.images import png_bytes
from tests.support.leaks import leaks
from tests.support.mediafiles import make_video
from tests.support.waiting import eventually

pytest.importorskip("torch")
from bot.__main__ import build_renderer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_renderer(device: str) -> object:
    return build_renderer(device, "tiny")


def result_files(fake: FakeDiscord) -> set[str]:
    """The names under which result files were posted (the engine wrote them; /job attaches them again)."""
    return {name for r in fake.requests for name, _ in r.files if name.startswith("job-")}


def host_folders(data_dir: Path, tmp_path: Path) -> list[str]:
    """What must never be posted: the data directory, the test's folder and the temp dir, as absolute paths."""
    return [str(data_dir.resolve()), str(tmp_path.resolve()), tempfile.gettempdir().rstrip("/") + "/"]


async def lose_an_input(h: Harness, job_id: int) -> None:
    """The job's own copy of its init image disappears before it renders (a disk cleaned by hand)."""
    job = await h.job(job_id)
    assert job.spec.init_image is not None
    await asyncio.to_thread(Path(job.spec.init_image).unlink)


async def test_nothing_posted_names_a_host_folder(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path, default_iterations=2, max_video_seconds=5.0)
    video = await asyncio.to_thread(lambda: make_video(tmp_path / "clip.mp4", seconds=1.0, fps=4).read_bytes())
    init, steer = (
        fake.add_file("start.png", png_bytes(), "image/png"),
        fake.add_file("steer.png", png_bytes(), "image/png"),
    )
    broken = fake.add_file("broken.png", b"\x89PNG not really", "image/png")
    async with running_bot(fake, config, run_jobs=False) as h:  # a job whose input is gone fails in the engine
        doomed = await fake.slash("imagine", user_id=BOB, prompt="doomed", init_image=init)
        await reply_with(fake, doomed, "accepted")
        await lose_an_input(h, 1)
    async with running_bot(fake, config, renderer=tiny_renderer) as h:
        sent = [
            await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse", init_image=init, image_prompt=steer),
            await fake.slash("animate", user_id=ALICE, prompt="a tunnel", frames=2, init_image=init),
            await fake.slash(
                "style",
                user_id=BOB,
                prompt="ink",
                fps=2.0,
                video=fake.add_file("clip.mp4", video, "video/mp4"),
            ),
            await fake.slash("imagine", user_id=BOB, prompt="x", init_image=broken),
        ]
        for command in sent[:3]:
            await reply_with(fake, command, "accepted", within=60.0)
        refused = await reply_with(fake, sent[3], "broken.png")
        await eventually(lambda: len(result_files(fake)) >= 3, 180.0, "three results")
        failed = await eventually(
            lambda: [m for m in fake.channel_messages() if "job **#1** failed" in m["content"]], 60.0, "the failure"
        )
        for job_id in range(1, 5):
            await reply_with(fake, await fake.slash("job", user_id=ALICE, id=job_id), f"#{job_id}")
        await h.settled()

    needles = host_folders(config.data_dir, tmp_path)
    results = result_files(fake)
    posted = [(where, data) for where, data in fake.everything_received() if not any(n in where for n in results)]
    files = [(where, data) for where, data in fake.everything_received() if any(n in where for n in results)]
    assert "broken.png" in refused
    assert failed
    assert leaks(posted, needles) == []  # every text, embed, component and preview the bot posted
    assert files
    assert leaks(files, needles) == []  # the results' metadata names inputs by file name and SHA-256 only


def test_the_search_finds_a_path_hidden_in_a_compressed_png_chunk(tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("engine_params", f'{{"init_image": "{tmp_path}/data/inputs/1/init_image.png"}}', zip=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png", pnginfo=info)
    data = (tmp_path / "x.png").read_bytes()
    assert str(tmp_path).encode() not in data  # compressed: a plain search would miss it
    assert [leak.needle for leak in leaks([("x.png", data)], [str(tmp_path)])] == [str(tmp_path)]
    assert leaks([("x", str(tmp_path).encode("utf-16-le"))], [str(tmp_path)])
