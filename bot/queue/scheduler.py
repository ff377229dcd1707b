"""Fair share: who runs next, and the positions and ETAs that follow (docs/architecture.md, "Fair share").

Among members with queued jobs, the one with the least GPU seconds in the usage window goes next
(a priority job divides its member's usage by a weight); FIFO within a member; ties to the oldest
job. `FairShare.choose` is what the store calls inside its claim transaction; `plan` simulates the
same rule over the whole queue to give every job a position and an ETA.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Sequence

from storage.records import QueueState


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FairShare:
    """The scheduling rule. `max_running_per_member` None means no cap."""

    priority_weight: float = 4.0
    max_running_per_member: int | None = 1

    def __post_init__(self) -> None:
        if self.max_running_per_member is not None and self.max_running_per_member < 1:
            raise ValueError("max_running_per_member must be at least 1 (or None for no cap)")
        if self.priority_weight <= 0:
            raise ValueError("priority_weight must be positive")

    def effective_usage(self, usage: float, priority: bool) -> float:
        return usage / self.priority_weight if priority else usage

    def choose(self, state: QueueState) -> int | None:
        """The id of the job to run next, or None when every member with queued jobs is at the running cap."""
        best: tuple[float, int] | None = None
        seen: set[int] = set()
        for job in state.queued:  # id order, so the first job seen for a member is its oldest
            if job.user_id in seen:
                continue
            seen.add(job.user_id)
            if self.at_cap(state.running_per_member.get(job.user_id, 0)):
                continue
            key = (self.effective_usage(state.usage.get(job.user_id, 0.0), job.priority), job.id)
            if best is None or key < best:
                best = key
        return None if best is None else best[1]

    def at_cap(self, running: int) -> bool:
        return self.max_running_per_member is not None and running >= self.max_running_per_member


@dataclasses.dataclass(frozen=True, slots=True)
class Work:
    """A job as the simulation sees it: whose, whether priority, how many seconds (left)."""

    id: int
    user_id: int
    priority: bool
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """One job's place in the simulated schedule. Times are seconds from now."""

    id: int
    position: int  # 0: running now; 1: next; ...
    eta_start_s: float
    eta_done_s: float


def plan(
    policy: FairShare,
    running: Sequence[Work],
    queued: Sequence[Work],
    usage: dict[int, float],
    workers: int = 1,
) -> list[Planned]:
    """Simulate the scheduler: running jobs (`seconds` = what is left) first, then queued jobs in run order.

    At each dispatch the member with the least (weighted) usage goes next and is charged the whole
    duration of the job it gets, which is what its usage will be when the next choice is made.
    """
    workers = max(1, workers)
    out: list[Planned] = []
    free_at = [0.0] * workers  # a heap of the times each worker becomes free
    ends: dict[int, list[float]] = {}  # member -> end times of its simulated running jobs
    for work in sorted(running, key=lambda w: w.seconds):
        start = heapq.heappop(free_at)
        heapq.heappush(free_at, start + work.seconds)
        ends.setdefault(work.user_id, []).append(start + work.seconds)
        out.append(Planned(work.id, 0, 0.0, start + work.seconds))

    per_member: dict[int, deque[Work]] = {}
    for work in sorted(queued, key=lambda w: w.id):
        per_member.setdefault(work.user_id, deque()).append(work)
    spent = dict(usage)

    def key(member: int) -> tuple[float, int, int]:
        head = per_member[member][0]
        return (policy.effective_usage(spent.get(member, 0.0), head.priority), head.id, member)

    heap = [key(m) for m in per_member]
    heapq.heapify(heap)
    position = 0
    while heap:
        now = heapq.heappop(free_at)
        chosen = _next_member(policy, heap, ends, now)
        if chosen is None:  # everyone waiting is at the running cap: wait for the first of their jobs to end
            heapq.heappush(free_at, min(end for entry in heap for end in ends[entry[2]]))
            continue
        member = chosen[2]
        work = per_member[member].popleft()
        position += 1
        out.append(Planned(work.id, position, now, now + work.seconds))
        heapq.heappush(free_at, now + work.seconds)
        ends.setdefault(member, []).append(now + work.seconds)
        spent[member] = spent.get(member, 0.0) + work.seconds
        if per_member[member]:
            heapq.heappush(heap, key(member))
    return out


def _next_member(
    policy: FairShare, heap: list[tuple[float, int, int]], ends: dict[int, list[float]], now: float
) -> tuple[float, int, int] | None:
    """Pop the first (usage, job id, member) entry whose member is below the running cap at `now`.

    Members at the cap stay in `heap`; None when every one of them is.
    """
    blocked: list[tuple[float, int, int]] = []
    chosen: tuple[float, int, int] | None = None
    while heap:
        entry = heapq.heappop(heap)
        active = ends.get(entry[2])
        if active:
            active[:] = [end for end in active if end > now]  # forget the member's jobs that have ended
            if policy.at_cap(len(active)):
                blocked.append(entry)
                continue
        chosen = entry
        break
    for entry in blocked:
        heapq.heappush(heap, entry)
    return chosen
