"""Fair share: who runs next, and the order, positions and ETAs that follow from it (discord.md §5).

Among members with queued jobs, the one with the least GPU seconds in the usage window goes next
(a priority job divides its member's usage by a weight); FIFO within a member; ties to the oldest
job. `FairShare.choose` is what the store calls inside its claim transaction; `plan` simulates the
same rule over the whole queue to give every job a position and an ETA.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from storage.records import Candidate, JobRecord, QueueState


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
            if self._at_cap(state.running_per_member.get(job.user_id, 0)):
                continue
            key = (self.effective_usage(state.usage.get(job.user_id, 0.0), job.priority), job.id)
            if best is None or key < best:
                best = key
        return None if best is None else best[1]

    def _at_cap(self, running: int) -> bool:
        return self.max_running_per_member is not None and running >= self.max_running_per_member


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """One job's place in the simulated schedule. Times are seconds from now."""

    job: JobRecord
    position: int  # 0: running now; 1: next; ...
    eta_start_s: float
    eta_done_s: float


def candidate(job: JobRecord) -> Candidate:
    return Candidate(
        id=job.id,
        user_id=job.owner.user_id,
        guild_id=job.owner.guild_id,
        priority=job.priority,
        created_at=job.created_at,
    )


def plan(
    policy: FairShare,
    running: Sequence[tuple[JobRecord, float]],
    queued: Iterable[JobRecord],
    usage: dict[int, float],
    duration: Callable[[JobRecord], float],
    workers: int = 1,
) -> list[Planned]:
    """Simulate the scheduler: running jobs (with their remaining seconds) first, then queued jobs in run order.

    At each dispatch the member with the least (weighted) usage goes next and is charged the whole
    duration of the job it gets, which is what its usage will be when the next choice is made.
    """
    workers = max(1, workers)
    out: list[Planned] = []
    free_at = [0.0] * workers  # a heap of the times each worker becomes free
    ends: dict[int, list[float]] = {}  # member -> end times of its simulated running jobs
    for job, remaining in sorted(running, key=lambda r: r[1]):
        start = heapq.heappop(free_at)
        heapq.heappush(free_at, start + remaining)
        ends.setdefault(job.owner.user_id, []).append(start + remaining)
        out.append(Planned(job=job, position=0, eta_start_s=0.0, eta_done_s=start + remaining))

    per_member: dict[int, deque[JobRecord]] = {}
    for job in sorted(queued, key=lambda j: j.id):
        per_member.setdefault(job.owner.user_id, deque()).append(job)
    spent = dict(usage)

    def key(member: int) -> tuple[float, int, int]:
        head = per_member[member][0]
        return (policy.effective_usage(spent.get(member, 0.0), head.priority), head.id, member)

    heap = [key(m) for m in per_member]
    heapq.heapify(heap)
    position = 0
    while heap:
        now = heapq.heappop(free_at)
        blocked: list[tuple[float, int, int]] = []
        chosen: tuple[float, int, int] | None = None
        while heap:
            entry = heapq.heappop(heap)
            member = entry[2]
            if policy._at_cap(sum(1 for end in ends.get(member, ()) if end > now)):
                blocked.append(entry)
                continue
            chosen = entry
            break
        if chosen is None:  # everyone waiting is at the running cap: wait for the first of their jobs to end
            later = min(end for entry in blocked for end in ends[entry[2]] if end > now)
            heapq.heappush(free_at, later)
            for entry in blocked:
                heapq.heappush(heap, entry)
            continue
        for entry in blocked:
            heapq.heappush(heap, entry)
        member = chosen[2]
        job = per_member[member].popleft()
        seconds = duration(job)
        position += 1
        out.append(Planned(job=job, position=position, eta_start_s=now, eta_done_s=now + seconds))
        heapq.heappush(free_at, now + seconds)
        ends.setdefault(member, []).append(now + seconds)
        spent[member] = spent.get(member, 0.0) + seconds
        if per_member[member]:
            heapq.heappush(heap, key(member))
    return out
