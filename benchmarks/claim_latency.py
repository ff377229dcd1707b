"""Claim and submit latency of the job store with a deep queue and several workers claiming at once (prints numbers).

    python benchmarks/claim_latency.py [--backend sqlite|postgres] [--jobs 10000] [--members 500] [--workers 8]
        [--claims 400] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Fills a fresh database (a temporary SQLite file, or a new PostgreSQL database made through `--admin-url`
and dropped at the end) with `--jobs` queued jobs from `--members` members over `--guilds` servers,
timing each submit. Then `--workers` stores, each with its own connection (as separate worker
processes would have), claim in parallel with the bot's fair-share rule, each finishing its job at
once, until `--claims` claims were made; every claim is timed. Nothing renders.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loop_lag import percentile
from bot.queue.scheduler import FairShare
from engine.jobs import JobSpec, JobStatus
from storage.factory import open_store
from storage.records import Owner, SubmitLimits
from storage.store import JobStore

SPEC = JobSpec(text_prompts="a lighthouse at dusk", width=64, height=64, iterations=50, vqgan_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = sorted({flag for flag in ("avx512_bf16", "amx_bf16", "avx2") if f" {flag}" in text})
    return ", ".join(found) or "none of avx2/avx512_bf16/amx_bf16"


async def fill(store: JobStore, jobs: int, members: int, guilds: int) -> list[float]:
    times = []
    for n in range(jobs):
        member = n % members
        owner = Owner(user_id=1000 + member, guild_id=1 + member % guilds, channel_id=7)
        began = time.perf_counter()
        await store.create(owner, SPEC, now=time.time(), limits=NO_LIMITS)
        times.append(time.perf_counter() - began)
    return times


async def claim_until(
    store: JobStore, name: str, policy: FairShare, left: list[int], times: list[float], errors: list[str]
) -> set[int]:
    mine: set[int] = set()
    while left[0] > 0:
        left[0] -= 1
        began = time.perf_counter()
        try:
            claim = await store.claim_next(
                f"{name}/cpu", lease_s=60, now=time.time(), choose=policy.choose, device="cpu"
            )
        except Exception as e:  # SQLite's busy timeout under several writers: counted, not hidden
            errors.append(f"{type(e).__name__}: {e}")
            continue
        times.append(time.perf_counter() - began)
        if claim is None:
            continue
        mine.add(claim.job.id)
        try:
            await store.finish(claim, JobStatus.DONE, now=time.time(), gpu_seconds=0.5, step=50, frame=1)
        except Exception as e:
            errors.append(f"finish: {type(e).__name__}: {e}")
    return mine


async def bench(url: str, args: argparse.Namespace) -> None:
    first = await open_store(url)
    try:
        submits = await fill(first, args.jobs, args.members, args.guilds)
        workers = [first, *[await open_store(url) for _ in range(args.workers - 1)]]
        policy = FairShare(max_running_per_member=None)
        claims: list[float] = []
        errors: list[str] = []
        left = [args.claims]
        began = time.perf_counter()
        taken = await asyncio.gather(
            *(claim_until(s, f"worker-{n}", policy, left, claims, errors) for n, s in enumerate(workers))
        )
        elapsed = time.perf_counter() - began
        every = [job for mine in taken for job in mine]
        assert len(every) == len(set(every)), "two workers claimed the same job"
        for store in workers[1:]:
            await store.close()
    finally:
        await first.close()
    ms = lambda values, q: f"{percentile(values, q) * 1000:.1f} ms"  # noqa: E731
    print(f"backend {args.backend}: {args.jobs} queued jobs from {args.members} members in {args.guilds} servers")
    print(f"submit: p50 {ms(submits, 50)}, p99 {ms(submits, 99)} ({len(submits)} submits)")
    print(
        f"claim with {args.workers} workers in parallel: p50 {ms(claims, 50)}, p99 {ms(claims, 99)} "
        f"({len(claims)} claims, {len(every)} jobs, {len(every) / elapsed:.0f} claims+finishes/s)"
    )
    if errors:
        print(f"{len(errors)} claims failed, e.g. {errors[0]}")
    print(f"CPU flags: {cpu_flags()}")


@contextlib.asynccontextmanager
async def fresh_postgres(admin_url: str) -> AsyncIterator[str]:
    """The URL of a new database made through `admin_url`, dropped on exit (the benchmarks never reuse one)."""
    import asyncpg

    name = f"vqbot_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def on_fresh_postgres(admin_url: str, args: argparse.Namespace) -> None:
    async with fresh_postgres(admin_url) as url:
        await bench(url, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--guilds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--claims", type=int, default=400)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.backend == "postgres":
        asyncio.run(on_fresh_postgres(args.admin_url, args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(str(Path(tmp) / "jobs.sqlite3"), args))


if __name__ == "__main__":
    main()
