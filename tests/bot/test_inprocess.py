"""The real bot against the fake Discord with an in-memory queue (no torch): the Discord side in detail.

The subprocess tests in test_e2e.py run `python -m bot` with the real queue and the tiny engine.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

from PIL import Image

from tests.bot.conftest import make_config, running_bot
from tests.bot.fake_discord import ALL_PERMISSIONS, FakeDiscord
from tests.bot.memory_queue import MemoryQueue

ALICE, BOB, MOD = 111111111111111111, 222222222222222222, 333333333333333333


def status_message(fake: FakeDiscord, job_id: int) -> dict[str, Any]:
    return next(m for m in fake.channel_messages() if m["content"].startswith(f"**#{job_id}**"))


def file_size(path: str) -> int:
    return Path(path).stat().st_size


def png_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_imagine_acks_then_posts_status_and_result_in_the_channel(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    async with running_bot(fake, queue, make_config(tmp_path)):
        sent = await fake.slash("imagine", user_id=ALICE, prompt="a lighthouse @everyone", width=64, height=96, seed=5)
        result = (await fake.wait_for(lambda: fake.results(1), 20.0, "the result"))[0]

    ack = fake.replies(sent)
    assert len(ack) == 1
    assert "#1" in ack[0]
    assert "position" in ack[0]
    callback = fake.token_requests(sent.token)
    assert len(callback) == 1
    assert callback[0].payload["data"]["flags"] == 64
    owner, spec, _, _ = queue.submitted[0]
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
    queue = MemoryQueue(tmp_path, steps=35, tick=0.2)  # about 7 s of "rendering"
    async with running_bot(fake, queue, make_config(tmp_path, preview_seconds=3.0)):
        await fake.slash("imagine", user_id=ALICE, prompt="a storm")
        await fake.wait_for(lambda: fake.results(1), 30.0, "the result")
    status_id = status_message(fake, 1)["id"]
    edits = [r for r in fake.requests if r.method == "PATCH" and r.path.endswith(f"/messages/{status_id}")]
    progress = [r for r in edits if "rendering" in r.payload["content"]]
    assert len(progress) >= 2
    assert all(name == "preview.webp" for r in progress for name, _ in r.files)
    assert any(r.files for r in progress)
    assert "▰" in progress[-1].payload["content"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
    assert min(gaps) >= 2.9  # never more than one edit per job every 3 s


async def test_a_rate_limited_status_edit_drops_the_frame_not_the_job(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path, steps=30, tick=0.2)
    fake.rate_limit("PATCH", r"/channels/\d+/messages/\d+", via=False, times=2)  # raised at once by discord.py
    fake.rate_limit("PATCH", r"/channels/\d+/messages/\d+", via=True, retry_after=0.5, times=1)  # slept and retried
    async with running_bot(fake, queue, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="rain")
        await fake.wait_for(lambda: fake.results(1), 30.0, "the result")
    statuses = [r.status for r in fake.requests if r.method == "PATCH"]
    assert statuses.count(429) == 3
    assert statuses[-1] == 200
    assert "✅ done" in status_message(fake, 1)["content"]


async def test_a_result_over_the_upload_limit_is_reencoded_and_job_says_so(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path, result_size=(160, 160))
    async with running_bot(fake, queue, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="noise", size_limit=20_000)
        result = (await fake.wait_for(lambda: fake.results(1), 20.0, "the result"))[0]
        sent = await fake.slash("job", user_id=BOB, id=1)
        reply = (await fake.wait_for(lambda: fake.replies(sent), 10.0, "/job's reply"))[0]
    assert file_size(queue.jobs[1].result_paths[0]) > 20_000  # the full-size PNG stays on disk
    attachment = result["attachments"][0]
    assert attachment["filename"] == "job-1.jpg"
    assert attachment["size"] <= 20_000 * 0.95
    assert "Re-encoded" in result["content"]
    assert "full-size file" in reply
    assert "kept on disk" in reply


async def test_a_413_from_discord_is_handled_by_reencoding(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path, result_size=(96, 96))
    fake.max_upload_bytes = 8_000
    async with running_bot(fake, queue, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="noise")
        result = (await fake.wait_for(lambda: fake.results(1), 20.0, "the result"))[0]
    posts = [r for r in fake.requests if r.method == "POST" and r.files and "/channels/" in r.path]
    assert next(r.status for r in posts) == 413
    assert posts[-1].status == 200
    assert result["attachments"][0]["filename"] == "job-1.jpg"
    assert result["attachments"][0]["size"] <= 8_000


async def test_a_deleted_status_message_does_not_stop_the_job(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path, steps=25, tick=0.2)
    async with running_bot(fake, queue, make_config(tmp_path, preview_seconds=3.0)):
        await fake.slash("imagine", user_id=ALICE, prompt="fog")
        first = await fake.wait_for(lambda: [m for m in fake.channel_messages() if m["content"].startswith("**#1**")])
        fake.delete_message(int(first[0]["id"]))
        await fake.wait_for(lambda: fake.results(1), 30.0, "the result")
    assert any(r.status == 404 for r in fake.requests if r.method == "PATCH")
    replacement = status_message(fake, 1)
    assert replacement["id"] != first[0]["id"]
    assert "✅ done" in replacement["content"]


async def test_cancel_rights_owner_yes_other_member_no_moderator_yes(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    queue.paused = True  # jobs stay queued
    async with running_bot(fake, queue, make_config(tmp_path)):
        for _ in range(2):
            await fake.slash("imagine", user_id=ALICE, prompt="a cat")
        await fake.wait_for(lambda: len(queue.jobs) == 2 and len(fake.channel_messages()) >= 4)
        refused = await fake.slash("cancel", user_id=BOB, job=1)
        text = (await fake.wait_for(lambda: fake.replies(refused)))[0]
        assert "only the member" in text
        assert queue.jobs[1].state == "queued"

        by_button = await fake.click(status_message(fake, 1), "v1:j:1:cancel", user_id=BOB)
        assert "only the member" in (await fake.wait_for(lambda: fake.replies(by_button)))[0]

        own = await fake.slash("cancel", user_id=ALICE)  # the latest by default: job 2
        await fake.wait_for(lambda: fake.replies(own))
        assert queue.jobs[2].state == "cancelled"
        assert queue.jobs[1].state == "queued"

        mod = await fake.slash("cancel", user_id=MOD, moderator=True, job=1)
        await fake.wait_for(lambda: fake.replies(mod))
        assert queue.jobs[1].state == "cancelled"
        await fake.wait_for(lambda: "cancelled" in status_message(fake, 1)["content"], 5.0, "the status edit")


async def test_bad_options_are_refused_with_the_reason(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    cases = [
        ({"raw_options": [{"name": "width", "type": 4, "value": 5000}], "prompt": "x"}, "width"),
        ({"prompt": "a:b:c:d"}, "too many ':'"),
        ({"prompt": "x", "iterations": 101}, "iterations must be between 1 and 100"),
        ({"prompt": "x", "model": "vqgan_gumbel"}, "unknown model"),
    ]
    async with running_bot(fake, queue, make_config(tmp_path)):
        for options, expected in cases:
            sent = await fake.slash("imagine", user_id=ALICE, **options)
            reply = (await fake.wait_for(lambda s=sent: fake.replies(s), 10.0, "a refusal"))[0]
            assert expected in reply
        assert queue.jobs == {}


async def test_an_attachment_that_is_not_an_image_is_refused_before_submit(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    fake_png = fake.add_file("cat.png", b"this is not a png at all" * 10, "image/png")
    real_png = fake.add_file("cat.png", png_bytes(), "image/png")
    async with running_bot(fake, queue, make_config(tmp_path)):
        bad = await fake.slash("imagine", user_id=ALICE, prompt="x", init_image=fake_png)
        texts = await fake.wait_for(lambda: [t for t in fake.replies(bad) if "not an image" in t], 10.0, "a refusal")
        assert "cat.png" in texts[0]
        assert queue.jobs == {}
        good = await fake.slash("imagine", user_id=ALICE, prompt="x", init_image=real_png)
        await fake.wait_for(lambda: [t for t in fake.replies(good) if "accepted" in t], 10.0, "an ack")
    callback = fake.token_requests(bad.token)[0]
    assert callback.payload["type"] == 5  # deferred before downloading
    _, spec, _, inputs = queue.submitted[0]
    assert inputs["init_image"] == png_bytes()
    assert spec.init_image is not None
    assert spec.init_image.startswith(str(tmp_path / "downloads"))


async def test_member_limit_and_missing_permission_are_refused(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path, max_queued_per_member=1)
    queue.paused = True
    async with running_bot(fake, queue, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="one")
        await fake.wait_for(lambda: queue.jobs)
        second = await fake.slash("imagine", user_id=ALICE, prompt="two")
        assert "limit is 1" in (await fake.wait_for(lambda: fake.replies(second)))[0]
        no_attach = await fake.slash("imagine", user_id=BOB, prompt="x", app_permissions=ALL_PERMISSIONS & ~(1 << 15))
        assert "Attach Files" in (await fake.wait_for(lambda: fake.replies(no_attach)))[0]
    assert len(queue.jobs) == 1


async def test_queue_and_job_show_positions_and_parameters(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    queue.paused = True
    async with running_bot(fake, queue, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="first")
        await fake.slash("imagine", user_id=BOB, prompt="second", seed=42)
        await fake.wait_for(lambda: len(queue.jobs) == 2)
        listing = await fake.slash("queue", user_id=BOB)
        text = (await fake.wait_for(lambda: fake.replies(listing)))[0]
        shown = await fake.slash("job", user_id=ALICE, id=2)
        job = (await fake.wait_for(lambda: fake.replies(shown)))[0]
    assert "2 job(s)" in text
    assert "#2" in text
    assert "(yours)" in text.split("#2")[1].split("\n")[0]
    assert "second" in job
    assert "seed 42" in job
    assert "position 2" in job


async def test_result_buttons_start_jobs_for_the_clicker(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    config = make_config(tmp_path)
    async with running_bot(fake, queue, config):
        await fake.slash("imagine", user_id=ALICE, prompt="a bridge", seed=3)
        result = (await fake.wait_for(lambda: fake.results(1), 20.0, "the result"))[0]
    # a new bot object (as after a restart) still understands the old message's buttons
    async with running_bot(fake, queue, config):
        vary = await fake.click(result, "v1:j:1:vary", user_id=BOB)
        await fake.wait_for(lambda: [t for t in fake.replies(vary) if "accepted" in t], 10.0, "an ack")
        reroll = await fake.click(result, "v1:j:1:reroll", user_id=BOB)
        await fake.wait_for(lambda: [t for t in fake.replies(reroll) if "accepted" in t], 10.0, "an ack")
    (o2, s2, _, _), (o3, s3, _, _) = queue.submitted[1], queue.submitted[2]
    assert o2.user_id == BOB
    assert s2.init_image == queue.jobs[1].result_paths[0]
    assert s2.seed is None
    assert o3.user_id == BOB
    assert s3.text_prompts == "a bridge"
    assert s3.seed is None
    assert s3.init_image is None


async def test_the_upscale_button_asks_for_the_tiny_upscaler_under_the_tiny_model(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    queue = MemoryQueue(tmp_path)
    async with running_bot(fake, queue, make_config(tmp_path)):
        await fake.slash("imagine", user_id=ALICE, prompt="a bridge", seed=3)
        result = (await fake.wait_for(lambda: fake.results(1), 20.0, "the result"))[0]
        upscale = await fake.click(result, "v1:j:1:upscale", user_id=BOB)
        await fake.wait_for(lambda: [t for t in fake.replies(upscale) if "accepted" in t], 10.0, "an ack")
    owner, spec, _, _ = queue.submitted[1]
    assert owner.user_id == BOB
    assert (spec.kind.value, spec.upscale_model) == ("upscale", "tiny")
    assert spec.init_image == queue.jobs[1].result_paths[0]


async def test_commands_outside_the_allowed_channels_are_refused(fake: FakeDiscord, tmp_path: Path) -> None:
    queue = MemoryQueue(tmp_path)
    async with running_bot(fake, queue, make_config(tmp_path, allowed_channels=(fake.channel_id,))):
        sent = await fake.slash("imagine", user_id=ALICE, prompt="x", channel_id=fake.other_channel_id)
        assert "not allowed in this channel" in (await fake.wait_for(lambda: fake.replies(sent)))[0]
    assert queue.jobs == {}
