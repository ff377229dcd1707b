"""The real bot against the fake Discord with an in-memory queue (no torch): the Discord side in detail.

The subprocess tests in test_e2e.py run `python -m bot` with the real queue and the tiny engine.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from tests.support.bot_harness import (
    ALICE,
    BOB,
    CAROL as MOD,
    make_config,
    reply_with,
    running_bot,
    status_edits,
    status_message,
)
from tests.support.fake_discord import ALL_PERMISSIONS, FakeDiscord
from tests.support.files import names_in, read_bytes, size_of
from tests.support.images import png_bytes
from tests.support.mediafiles import make_video
from tests.support.waiting import eventually


async def test_imagine_acks_then_posts_status_and_result_in_the_channel(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path)) as h:
        sent = await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse @everyone", width=64, height=96, seed=5)
        result = (await eventually(lambda: fake.results(1), 20.0, "the result"))[0]
        # a job quicker than its status message: the message is posted, then shows the end at once
        await eventually(lambda: "✅ done" in status_message(fake, 1)["content"], 20.0, "the final status")
        job = await h.job(1)

    ack = fake.replies(sent)
    assert len(ack) == 1
    assert "#1" in ack[0]
    assert "position" in ack[0]
    callback = fake.token_requests(sent.token)
    assert len(callback) == 1
    assert callback[0].payload["data"]["flags"] == 64
    owner, spec = job.owner, job.spec
    assert (owner.user_id, owner.channel_id, spec.width, spec.height, spec.seed) == (ALICE, fake.channel_id, 64, 96, 5)
    assert spec.text_prompts == "a lighthouse @everyone"
    assert spec.vqgan_model == "tiny"

    status = status_message(fake, 1)
    assert "✅ done" in status["content"]
    assert status["components"] == []
    assert status["allowed_mentions"] == {"parse": []}
    assert "<@111111111111111111>" in result["content"]
    assert "a lighthouse" in result["content"]
    assert "\\@everyone" in result["content"] or "@\u200beveryone" in result["content"]
    assert result["allowed_mentions"] == {"users": [ALICE], "parse": []}
    assert "64×96" in result["content"]
    assert "seed 5" in result["content"]
    ids = [c["custom_id"] for row in result["components"] for c in row["components"]]
    assert ids == ["v1:j:1:reroll", "v1:j:1:vary", "v1:j:1:animate", "v1:j:1:upscale"]
    data = fake.attachment_bytes(result["attachments"][0])
    assert data.startswith(b"\x89PNG")
    assert result["attachments"][0]["filename"] == "job-1.png"


async def test_progress_edits_carry_previews_and_are_paced(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path, preview_seconds=3.0), hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="a storm", iterations=35)
        for edits in (1, 2, 3):  # the job moves on only after each edit: three edits while it renders
            await eventually(lambda n=edits: len(status_edits(fake, 1, "rendering")) >= n, 30.0, f"edit {edits}")
            h.gate.allow(10)
        h.gate.release()
        await eventually(lambda: fake.results(1), 30.0, "the result")
    progress = status_edits(fake, 1, "rendering")
    assert len(progress) >= 3
    assert all(name == "preview.webp" for r in progress for name, _ in r.files)
    assert progress[0].files  # the first step's preview
    assert "▰" in progress[-1].payload["content"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
    assert min(gaps) >= 2.9  # never more than one edit per job every 3 s


async def test_a_rate_limited_status_edit_drops_the_frame_not_the_job(fake: FakeDiscord, tmp_path: Path) -> None:
    fake.rate_limit("PATCH", r"/channels/\d+/messages/\d+", via=False, times=2)  # raised at once by discord.py
    fake.rate_limit("PATCH", r"/channels/\d+/messages/\d+", via=True, retry_after=0.5, times=1)  # slept and retried

    def patches() -> list[int]:
        return [r.status for r in fake.requests if r.method == "PATCH"]

    async with running_bot(fake, make_config(tmp_path, preview_seconds=1.0), hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="rain", iterations=30)
        while patches().count(429) < 3:  # one more step after each edit until every rate limit was met
            seen = len(patches())
            await eventually(lambda s=seen: len(patches()) > s, 30.0, "the next status edit")
            h.gate.allow(1)
        h.gate.release()
        await eventually(lambda: fake.results(1), 30.0, "the result")
    assert patches().count(429) == 3
    assert patches()[-1] == 200
    assert "✅ done" in status_message(fake, 1)["content"]


async def test_a_result_over_the_upload_limit_is_reencoded_and_job_says_so(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path)) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="noise", width=160, height=160, size_limit=20_000)
        result = (await eventually(lambda: fake.results(1), 20.0, "the result"))[0]
        sent = await fake.slash("job", user_id=BOB, id=1)
        reply = (await eventually(lambda: fake.replies(sent), 10.0, "/job's reply"))[0]
        job = await h.job(1)
    assert job.upload_limit == 20_000
    assert size_of(job.result_paths[0]) > 20_000  # the full-size PNG stays on disk
    attachment = result["attachments"][0]
    assert attachment["filename"] == "job-1.jpg"
    assert attachment["size"] <= 20_000 * 0.95
    assert "Re-encoded" in result["content"]
    assert "full-size file" in reply
    assert "kept on disk" in reply


async def test_a_413_from_discord_is_handled_by_reencoding(fake: FakeDiscord, tmp_path: Path) -> None:
    fake.max_upload_bytes = 8_000
    async with running_bot(fake, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="noise", width=96, height=96)
        result = (await eventually(lambda: fake.results(1), 20.0, "the result"))[0]
    posts = [r for r in fake.requests if r.method == "POST" and r.files and "/channels/" in r.path]
    assert next(r.status for r in posts) == 413
    assert posts[-1].status == 200
    assert result["attachments"][0]["filename"] == "job-1.jpg"
    assert result["attachments"][0]["size"] <= 8_000


async def test_a_deleted_status_message_does_not_stop_the_job(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path, preview_seconds=1.0), hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="fog", iterations=25)
        first = await eventually(lambda: status_edits(fake, 1, "rendering") and status_message(fake, 1))
        fake.delete_message(int(first["id"]))
        h.gate.allow(5)  # the next progress edit meets the deleted message
        await eventually(lambda: any(r.status == 404 for r in fake.requests if r.method == "PATCH"), 30.0, "a 404")
        h.gate.release()
        await eventually(lambda: fake.results(1), 30.0, "the result")
    replacement = status_message(fake, 1)
    assert replacement["id"] != first["id"]
    assert "✅ done" in replacement["content"]


async def test_cancel_rights_owner_yes_other_member_no_moderator_yes(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:  # jobs stay queued
        for _ in range(2):
            await fake.slash("imagine", user_id=ALICE, prompt="a cat")
        await eventually(lambda: len(fake.channel_messages()) >= 4)
        refused = await fake.slash("cancel", user_id=BOB, job=1)
        text = (await eventually(lambda: fake.replies(refused)))[0]
        assert "only the member" in text
        assert (await h.job(1)).state == "queued"

        by_button = await fake.click(status_message(fake, 1), "v1:j:1:cancel", user_id=BOB)
        assert "only the member" in (await eventually(lambda: fake.replies(by_button)))[0]

        own = await fake.slash("cancel", user_id=ALICE)  # the latest by default: job 2
        await eventually(lambda: fake.replies(own))
        assert (await h.job(2)).state == "cancelled"
        assert (await h.job(1)).state == "queued"

        mod = await fake.slash("cancel", user_id=MOD, moderator=True, job=1)
        await eventually(lambda: fake.replies(mod))
        assert (await h.job(1)).state == "cancelled"
        await eventually(lambda: "cancelled" in status_message(fake, 1)["content"], 5.0, "the status edit")


async def test_bad_options_are_refused_with_the_reason(fake: FakeDiscord, tmp_path: Path) -> None:
    cases = [
        ({"raw_options": [{"name": "width", "type": 4, "value": 5000}], "prompt": "x"}, "width"),
        ({"prompt": "a:b:c:d"}, "too many ':'"),
        ({"prompt": "x", "iterations": 101}, "iterations must be between 1 and 100"),
        ({"prompt": "x", "model": "vqgan_gumbel"}, "unknown model"),
    ]
    async with running_bot(fake, make_config(tmp_path)) as h:
        for options, expected in cases:
            sent = await fake.slash("imagine", user_id=ALICE, **options)
            reply = (await eventually(lambda s=sent: fake.replies(s), 10.0, "a refusal"))[0]
            assert expected in reply
        assert await h.count() == 0


async def test_an_attachment_that_is_not_an_image_is_refused_before_submit(fake: FakeDiscord, tmp_path: Path) -> None:
    fake_png = fake.add_file("cat.png", b"this is not a png at all" * 10, "image/png")
    real_png = fake.add_file("cat.png", png_bytes(), "image/png")
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        bad = await fake.slash("imagine", user_id=ALICE, prompt="x", init_image=fake_png)
        texts = await eventually(lambda: [t for t in fake.replies(bad) if "not an image" in t], 10.0, "a refusal")
        assert "cat.png" in texts[0]
        assert await h.count() == 0
        good = await fake.slash("imagine", user_id=ALICE, prompt="x", init_image=real_png)
        await eventually(lambda: [t for t in fake.replies(good) if "accepted" in t], 10.0, "an ack")
        spec = (await h.job(1)).spec
    callback = fake.token_requests(bad.token)[0]
    assert callback.payload["type"] == 5  # deferred before downloading
    assert spec.init_image is not None
    assert read_bytes(spec.init_image) == png_bytes()  # the queue's own copy of the checked download
    assert names_in(tmp_path / "data" / "downloads") == []


async def test_member_limit_and_missing_permission_are_refused(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False, max_queued=1) as h:
        first = await fake.slash("imagine", user_id=ALICE, prompt="one")
        await reply_with(fake, first, "accepted")
        second = await fake.slash("imagine", user_id=ALICE, prompt="two")
        assert "the limit is 1" in (await eventually(lambda: fake.replies(second)))[0]
        no_attach = await fake.slash("imagine", user_id=BOB, prompt="x", app_permissions=ALL_PERMISSIONS & ~(1 << 15))
        assert "Attach Files" in (await eventually(lambda: fake.replies(no_attach)))[0]
        assert await h.count() == 1


async def test_queue_and_job_show_positions_and_parameters(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False):
        await reply_with(fake, await fake.slash("imagine", user_id=ALICE, prompt="first"), "accepted")
        await reply_with(fake, await fake.slash("imagine", user_id=BOB, prompt="second", seed=42), "accepted")
        listing = await fake.slash("queue", user_id=BOB)
        text = (await eventually(lambda: fake.replies(listing)))[0]
        shown = await fake.slash("job", user_id=ALICE, id=2)
        job = (await eventually(lambda: fake.replies(shown)))[0]
    assert "2 job(s)" in text
    assert "#2" in text
    assert "(yours)" in text.split("#2")[1].split("\n")[0]
    assert "second" in job
    assert "seed 42" in job
    assert "position 2" in job


async def test_result_buttons_start_jobs_for_the_clicker(fake: FakeDiscord, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_bot(fake, config):
        await fake.slash("imagine", user_id=ALICE, prompt="a bridge", seed=3)
        result = (await eventually(lambda: fake.results(1), 20.0, "the result"))[0]
    # a new bot object (as after a restart) still understands the old message's buttons
    async with running_bot(fake, config, run_jobs=False) as h:
        vary = await fake.click(result, "v1:j:1:vary", user_id=BOB)
        await eventually(lambda: [t for t in fake.replies(vary) if "accepted" in t], 10.0, "an ack")
        reroll = await fake.click(result, "v1:j:1:reroll", user_id=BOB)
        await eventually(lambda: [t for t in fake.replies(reroll) if "accepted" in t], 10.0, "an ack")
        first, second, third = await h.job(1), await h.job(2), await h.job(3)
    s2, s3 = second.spec, third.spec
    assert second.owner.user_id == BOB
    assert s2.init_image is not None
    assert read_bytes(s2.init_image) == read_bytes(first.result_paths[0])
    assert s2.seed is None
    assert third.owner.user_id == BOB
    assert s3.text_prompts == "a bridge"
    assert s3.seed is None
    assert s3.init_image is None


async def test_the_upscale_button_asks_for_the_tiny_upscaler_under_the_tiny_model(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    async with running_bot(fake, config):
        await fake.slash("imagine", user_id=ALICE, prompt="a bridge", seed=3)
        result = (await eventually(lambda: fake.results(1), 20.0, "the result"))[0]
    async with running_bot(fake, config, run_jobs=False) as h:
        upscale = await fake.click(result, "v1:j:1:upscale", user_id=BOB)
        await eventually(lambda: [t for t in fake.replies(upscale) if "accepted" in t], 10.0, "an ack")
        first, second = await h.job(1), await h.job(2)
    assert second.owner.user_id == BOB
    assert (second.spec.kind.value, second.spec.upscale_model) == ("upscale", "tiny")
    assert second.spec.init_image is not None
    assert read_bytes(second.spec.init_image) == read_bytes(first.result_paths[0])


async def test_commands_outside_the_allowed_channels_are_refused(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path, allowed_channels=(fake.channel_id,))) as h:
        sent = await fake.slash("imagine", user_id=ALICE, prompt="x", channel_id=fake.other_channel_id)
        assert "not allowed in this channel" in (await eventually(lambda: fake.replies(sent)))[0]
        assert await h.count() == 0


def mp4_bytes(tmp_path: Path, seconds: float) -> bytes:
    return make_video(tmp_path / f"clip-{seconds}.mp4", seconds=seconds, fps=10).read_bytes()


async def test_style_checks_the_video_then_submits_a_style_transfer(fake: FakeDiscord, tmp_path: Path) -> None:
    short = fake.add_file("clip.mp4", await asyncio.to_thread(mp4_bytes, tmp_path, 1.0), "video/mp4")
    long = fake.add_file("long.mp4", await asyncio.to_thread(mp4_bytes, tmp_path, 6.0), "video/mp4")
    not_video = fake.add_file("fake.mp4", b"\x00\x00\x00 ftypisom but not really" * 20, "video/mp4")
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        too_long = await fake.slash("style", user_id=ALICE, video=long, prompt="oil painting")
        assert "more than the 5 s allowed" in await reply_with(fake, too_long, "allowed")
        bogus = await fake.slash("style", user_id=ALICE, video=not_video, prompt="oil painting")
        assert "fake.mp4" in await reply_with(fake, bogus, "video")
        ok = await fake.slash("style", user_id=ALICE, video=short, prompt="oil painting", fps=4.0, source_weight=1.5)
        await reply_with(fake, ok, "accepted")
        assert await h.count() == 1
        spec = (await h.job(1)).spec
    assert spec.kind == "style_transfer"
    assert (spec.extraction_fps, spec.source_image_weight, spec.frames) == (4.0, 1.5, 4)
    assert spec.video is not None
    assert read_bytes(spec.video)[4:8] == b"ftyp"  # the checked MP4 went to the queue


async def test_animate_submits_frames_zoom_and_shift(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path), run_jobs=False) as h:
        ok = await fake.slash("animate", user_id=ALICE, prompt="a tunnel", frames=6, zoom=1.1, shift_x=3)
        await reply_with(fake, ok, "accepted")
        too_many = await fake.slash("animate", user_id=ALICE, prompt="a tunnel", frames=500)
        assert "frames must be between 2 and 20" in await reply_with(fake, too_many, "frames")
        spec = (await h.job(1)).spec
    assert (spec.kind, spec.frames, spec.zoom, spec.shift_x, spec.shift_y) == ("animation", 6, 1.1, 3, 0)


async def test_an_old_status_message_that_refuses_edits_is_replaced(fake: FakeDiscord, tmp_path: Path) -> None:
    too_old = {"code": 30046, "message": "Maximum number of edits to messages older than 1 hour reached."}
    fake.fail("PATCH", r"/channels/\d+/messages/\d+", 429, too_old, headers={"Retry-After": "1"})
    async with running_bot(fake, make_config(tmp_path), hold_at=1) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="fog", iterations=25)
        await eventually(lambda: any(r.status == 429 for r in fake.requests if r.method == "PATCH"), 30.0, "a refusal")
        h.gate.release()
        await eventually(lambda: fake.results(1), 30.0, "the result")
    statuses = [m for m in fake.channel_messages() if m["content"].startswith("**#1**")]
    assert len(statuses) == 2  # the one Discord refused, and its replacement
    assert "✅ done" in statuses[-1]["content"]


async def test_queued_positions_refresh_when_they_move(fake: FakeDiscord, tmp_path: Path) -> None:
    async with running_bot(fake, make_config(tmp_path, queue_refresh_seconds=0.5), run_jobs=False):
        for prompt in ("first", "second"):
            await fake.slash("imagine", user_id=ALICE, prompt=prompt)
        await eventually(lambda: "position 2" in status_message(fake, 2)["content"], 5.0, "job 2 at position 2")
        cancel = await fake.slash("cancel", user_id=ALICE, job=1)
        await reply_with(fake, cancel, "job")
        await eventually(lambda: "position 1" in status_message(fake, 2)["content"], 5.0, "job 2 moving up")
    edits = [r for r in fake.requests if r.method == "PATCH" and r.path.endswith(status_message(fake, 2)["id"])]
    assert len(edits) == 1  # edited once, when its position changed
