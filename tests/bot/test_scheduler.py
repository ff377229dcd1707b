"""The fair-share rule and the simulated schedule that positions and ETAs come from."""

from __future__ import annotations

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
