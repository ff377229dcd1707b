"""`python -m bot` as a subprocess pointed at the fake Discord: the same code a server runs, tiny model, CPU.

It runs through tests.support.gated_bot, which is `python -m bot` with its renderers behind the
process's `gate` (a FileGate): a test holds a render mid-job with `bot.gate.hold_at(n)`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.support import speed
from tests.support.fake_discord import BOT_TOKEN, FakeDiscord
from tests.support.gate import FileGate


class BotProcess:
    """One run of the bot; `log` collects its stderr (the logs) in a file."""

    def __init__(self, fake: FakeDiscord, data_dir: Path, log: Path, **env: str) -> None:
        self.fake, self.data_dir, self.log = fake, data_dir, log
        self.gate = FileGate(data_dir.parent / "gate")
        base = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "VQBOT_TEST_GATE": str(self.gate.directory),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "DISCORD_TOKEN": BOT_TOKEN,
            "DISCORD_API_BASE": fake.api_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "ENGINE_MODEL": "tiny",
            "ENGINE_DEVICE": "cpu",
            "ENGINE_THREADS": "1",
            "BOT_DATA_DIR": str(data_dir),
            "BOT_GUILD_ID": str(fake.guild_id),
            "BOT_DEFAULT_SIZE": "64",
            "BOT_DEFAULT_ITERATIONS": "20",
            "BOT_MAX_SIZE": "128",
            "BOT_MAX_ITERATIONS": "2000",
            "BOT_MAX_FRAMES": "12",
            "BOT_DEFAULT_FRAMES": "3",
            "BOT_MAX_VIDEO_SECONDS": "4",
            "BOT_NUM_CUTS": "8",
            "BOT_MAX_QUEUED_PER_MEMBER": "3",
            "BOT_MODERATOR_ROLE": "Render Mods",
            "BOT_PREVIEW_SECONDS": "3",
            "BOT_CHANNEL_EDIT_SECONDS": "0.3",
            "BOT_WORKER_ID": "e2e-worker",
            "BOT_LOG_LEVEL": "DEBUG",
            **env,
        }
        self.env = speed.child_env(base)
        self.proc: asyncio.subprocess.Process | None = None

    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.support.gated_bot",
                *args,
                cwd=self.data_dir.parent,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        return self.proc

    async def start(self, within: float = 60.0) -> None:
        self.fake.identified.clear()
        self.proc = await self._spawn()
        waiter = asyncio.create_task(self.fake.identified.wait())
        exited = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait({waiter, exited}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if waiter not in done:
            await self.kill()
            raise AssertionError(f"the bot did not connect:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: no cleanup at all, as after a crash or an OOM kill."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
            self.gate.forget(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM, as systemd or Docker stop it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def exit_code(self, within: float = 30.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), within)


class WorkerProcess(BotProcess):
    """`python -m bot worker` the same way: it renders from the shared database and never talks to Discord
    (no DISCORD_TOKEN in its environment)."""

    def __init__(self, fake: FakeDiscord, data_dir: Path, log: Path, **env: str) -> None:
        super().__init__(fake, data_dir, log, **env)
        self.env.pop("DISCORD_TOKEN", None)

    async def start(self, within: float = 60.0) -> None:
        """Start it and wait until its runner claims jobs (its log says so)."""
        before = len(self.logs())
        proc = await self._spawn("worker")
        deadline = asyncio.get_running_loop().time() + within
        while "started on" not in self.logs()[before:]:
            if proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                await self.kill()
                raise AssertionError(f"the worker did not start:\n{self.logs()[-3000:]}")
            await asyncio.sleep(0.1)
