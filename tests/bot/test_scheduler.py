"""The fair-share rule and the simulated schedule that positions and ETAs come from."""

from __future__ import annotations

import random

import pytest

from bot.queue.scheduler import FairShare, Work, plan
from storage.records import Candidate, QueueState


def queued(*jobs: tuple[int, int]) -> tuple[Candidate, ...]:
    return tuple(Candidate(id=i, user_id=u, guild_id=None, priority=False, created_at=float(i)) for i, u in jobs)


def test_choose_skips_members_at_their_running_cap() -> None:
    state = QueueState(queued=queued((1, 10), (2, 10), (3, 20)), running_per_member={10: 1}, usage={20: 500.0})
    assert FairShare().choose(state) == 3  # member 10 is busy, so member 20 goes although it used more
    assert FairShare(max_running_per_member=None).choose(state) == 1
    assert FairShare().choose(QueueState(queued=queued((1, 10)), running_per_member={10: 1}, usage={})) is None


def test_ties_go_to_the_oldest_job() -> None:
    state = QueueState(queued=queued((5, 1), (3, 2), (9, 3)), running_per_member={}, usage={})
    assert FairShare().choose(state) == 3


def test_two_workers_share_the_queue_and_etas_follow() -> None:
    running = [Work(1, 10, False, 4.0)]
    waiting = [Work(2, 10, False, 10.0), Work(3, 20, False, 10.0), Work(4, 30, False, 10.0)]
    planned = {p.id: p for p in plan(FairShare(), running, waiting, usage={}, workers=2)}
    assert (planned[1].position, planned[1].eta_done_s) == (0, 4.0)
    # worker 2 is free now: job 2's member is running job 1 (cap 1), so member 20 goes first
    assert (planned[3].position, planned[3].eta_start_s) == (1, 0.0)
    # worker 1 frees at 4 s: members 10 and 30 have used nothing in the window, the older job wins
    assert (planned[2].position, planned[2].eta_start_s, planned[2].eta_done_s) == (2, 4.0, 14.0)
    assert (planned[4].position, planned[4].eta_start_s) == (3, 10.0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairShare(max_running_per_member=0)
    with pytest.raises(ValueError, match="positive"):
        FairShare(priority_weight=0)


def guild_jobs(*jobs: tuple[int, int, int]) -> tuple[Candidate, ...]:
    return tuple(Candidate(id=i, user_id=u, guild_id=g, priority=False, created_at=float(i)) for i, u, g in jobs)


def test_the_server_with_less_gpu_time_goes_first_then_its_member_with_less() -> None:
    state = QueueState(
        queued=guild_jobs((1, 10, 100), (2, 11, 100), (3, 20, 200), (4, 21, 200)),
        running_per_member={},
        usage={10: 5.0, 11: 1.0, 20: 50.0, 21: 40.0},
        guild_usage={100: 6.0, 200: 90.0},
    )
    assert FairShare().choose(state) == 2  # server 100 used less; within it member 11


def test_a_server_at_its_running_cap_waits_and_positions_say_so() -> None:
    state = QueueState(
        queued=guild_jobs((2, 10, 100), (3, 20, 200)),
        running_per_member={},
        usage={},
        guild_usage={100: 0.0, 200: 99.0},
        running_per_guild={100: 1},
    )
    assert FairShare(max_running_per_guild=1).choose(state) == 3
    assert FairShare().choose(state) == 2
    running = [Work(1, 11, False, 5.0, 100)]
    queued = [Work(2, 10, False, 10.0, 100), Work(3, 20, False, 10.0, 200)]
    planned = {p.id: p for p in plan(FairShare(max_running_per_guild=1), running, queued, {}, workers=2)}
    assert (planned[3].position, planned[3].eta_start_s) == (1, 0.0)  # the second device takes the other server
    assert (planned[2].position, planned[2].eta_start_s) == (2, 5.0)  # once the server's running job ends


def test_a_big_servers_backlog_does_not_hold_back_a_small_server() -> None:
    backlog = [Work(n, 10 + n % 3, False, 10.0, 100) for n in range(1, 31)]
    small = [Work(31, 50, False, 10.0, 200)]
    planned = {p.id: p for p in plan(FairShare(), [], backlog + small, {}, guild_usage={100: 20.0})}
    assert planned[31].position == 1
    assert planned[1].position == 2


def test_the_plan_follows_the_order_the_runner_would_claim_in() -> None:
    rng = random.Random(12)
    for _ in range(40):
        jobs = [
            Work(n, rng.choice([1, 2, 3, 4]), rng.random() < 0.2, rng.choice([5.0, 10.0, 30.0]), rng.choice([7, 8, 9]))
            for n in range(1, rng.randint(2, 25))
        ]
        usage = {u: rng.choice([0.0, 15.0, 40.0]) for u in (1, 2, 3, 4)}
        guild_usage: dict[int | None, float] = {g: rng.choice([0.0, 20.0, 60.0]) for g in (7, 8, 9)}
        policy = FairShare(max_running_per_member=None)
        planned = [p.id for p in plan(policy, [], jobs, usage, guild_usage=guild_usage)]
        claimed, left = [], {w.id: w for w in jobs}
        spent, guild_spent = dict(usage), dict(guild_usage)
        while left:
            state = QueueState(
                queued=tuple(
                    Candidate(id=w.id, user_id=w.user_id, guild_id=w.guild_id, priority=w.priority, created_at=0.0)
                    for w in sorted(left.values(), key=lambda w: w.id)
                ),
                running_per_member={},
                usage=spent,
                guild_usage=guild_spent,
            )
            chosen = policy.choose(state)
            assert chosen is not None
            work = left.pop(chosen)
            spent[work.user_id] = spent.get(work.user_id, 0.0) + work.seconds
            guild_spent[work.guild_id] = guild_spent.get(work.guild_id, 0.0) + work.seconds
            claimed.append(chosen)
        assert planned == claimed
