"""Fair share: who runs next, and the positions and ETAs that follow (docs/architecture.md, "Fair share").

Servers first: among the servers with queued jobs, the one with the least GPU seconds in the usage
window goes next; within it, the member with the least (a priority job divides its member's usage by
a weight); FIFO within a member; ties to the oldest job. A member runs at most
`max_running_per_member` jobs at once and a server `max_running_per_guild`. `FairShare.choose` is what
the store calls inside its claim transaction; `plan` simulates the same rule over the whole queue to
give every job a position and an ETA.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Mapping, Sequence

from storage.records import QueueState

Guild = int | None  # a job's server; None for jobs from before servers were recorded


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FairShare:
    """The scheduling rule. A cap of None means no cap."""

    priority_weight: float = 4.0
    max_running_per_member: int | None = 1
    max_running_per_guild: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_running_per_member", "max_running_per_guild"):
            cap = getattr(self, name)
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no cap)")
        if self.priority_weight <= 0:
            raise ValueError("priority_weight must be positive")

    def effective_usage(self, usage: float, priority: bool) -> float:
        return usage / self.priority_weight if priority else usage

    def choose(self, state: QueueState) -> int | None:
        """The id of the job to run next, or None when every member or server with queued jobs is at its cap."""
        best: tuple[float, float, int] | None = None
        seen: set[tuple[Guild, int]] = set()
        for job in state.queued:  # id order, so the first job seen for a member in a server is its oldest there
            lane = (job.guild_id, job.user_id)
            if lane in seen:
                continue
            seen.add(lane)
            if self.at_cap(state.running_per_member.get(job.user_id, 0)):
                continue
            if self.guild_at_cap(state.running_per_guild.get(job.guild_id, 0)):
                continue
            key = (
                state.guild_usage.get(job.guild_id, 0.0),
                self.effective_usage(state.usage.get(job.user_id, 0.0), job.priority),
                job.id,
            )
            if best is None or key < best:
                best = key
        return None if best is None else best[2]

    def at_cap(self, running: int) -> bool:
        return self.max_running_per_member is not None and running >= self.max_running_per_member

    def guild_at_cap(self, running: int) -> bool:
        return self.max_running_per_guild is not None and running >= self.max_running_per_guild


@dataclasses.dataclass(frozen=True, slots=True)
class Work:
    """A job as the simulation sees it: whose, whether priority, how many seconds (left), which server."""

    id: int
    user_id: int
    priority: bool
    seconds: float
    guild_id: Guild = None


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """One job's place in the simulated schedule. Times are seconds from now."""

    id: int
    position: int  # 0: running now; 1: next; ...
    eta_start_s: float
    eta_done_s: float


_Entry = tuple[float, int, int]  # (the member's weighted usage, the head job's id, the member)


class _Simulation:
    """The queue as `plan` replays it: per server a heap of its members, FIFO per member; usage charged as jobs
    are handed out. Servers are few, so each dispatch looks at every server; members are many, so each server
    keeps its members in a heap (an entry whose usage grew since it was pushed is refreshed when it comes up)."""

    def __init__(
        self, policy: FairShare, usage: Mapping[int, float], guild_usage: Mapping[Guild, float] | None
    ) -> None:
        self.policy = policy
        self.spent = dict(usage)
        self.guild_spent: dict[Guild, float] = dict(guild_usage or {})
        self.lanes: dict[tuple[Guild, int], deque[Work]] = {}
        self.heaps: dict[Guild, list[_Entry]] = {}
        self.member_ends: dict[int, list[float]] = {}  # member -> end times of its simulated running jobs
        self.guild_ends: dict[Guild, list[float]] = {}

    def add(self, work: Work) -> None:
        lane = self.lanes.setdefault((work.guild_id, work.user_id), deque())
        lane.append(work)
        if len(lane) == 1:
            self.heaps.setdefault(work.guild_id, []).append(self._entry(work.guild_id, work.user_id))

    def start(self) -> None:
        for heap in self.heaps.values():
            heapq.heapify(heap)

    def run(self, work: Work, end: float) -> None:
        self.member_ends.setdefault(work.user_id, []).append(end)
        self.guild_ends.setdefault(work.guild_id, []).append(end)

    def _entry(self, guild: Guild, member: int) -> _Entry:
        head = self.lanes[(guild, member)][0]
        return (self.policy.effective_usage(self.spent.get(member, 0.0), head.priority), head.id, member)

    @staticmethod
    def _active(times: list[float] | None, now: float) -> int:
        if not times:
            return 0
        times[:] = [end for end in times if end > now]  # forget the jobs that have ended
        return len(times)

    def _best(self, guild: Guild, now: float, *, take: bool) -> _Entry | None:
        """The guild's member that may run now (`take`: removed from the heap); members at their cap stay."""
        heap, blocked, found = self.heaps[guild], [], None
        while heap:
            entry = heapq.heappop(heap)
            current = self._entry(guild, entry[2])
            if current != entry:  # its member got a job in another server meanwhile
                heapq.heappush(heap, current)
                continue
            if self.policy.at_cap(self._active(self.member_ends.get(entry[2]), now)):
                blocked.append(entry)
                continue
            found = entry
            if not take:
                blocked.append(entry)
            break
        for entry in blocked:
            heapq.heappush(heap, entry)
        return found

    def next_work(self, now: float) -> Work | None:
        """Take the job that runs next at `now`, or None when everyone waiting is at a cap."""
        best: tuple[float, _Entry] | None = None
        chosen: Guild = None
        for guild in self.heaps:
            if self.policy.guild_at_cap(self._active(self.guild_ends.get(guild), now)):
                continue
            entry = self._best(guild, now, take=False)
            if entry is not None and (best is None or (self.guild_spent.get(guild, 0.0), entry) < best):
                best, chosen = (self.guild_spent.get(guild, 0.0), entry), guild
        if best is None:
            return None
        member = best[1][2]
        self._best(chosen, now, take=True)
        lane = self.lanes[(chosen, member)]
        work = lane.popleft()
        self.spent[member] = self.spent.get(member, 0.0) + work.seconds
        self.guild_spent[chosen] = self.guild_spent.get(chosen, 0.0) + work.seconds
        if lane:
            heapq.heappush(self.heaps[chosen], self._entry(chosen, member))
        else:
            del self.lanes[(chosen, member)]
            if not self.heaps[chosen]:
                del self.heaps[chosen]
        return work

    def next_end(self, now: float) -> float | None:
        """When the first simulated running job ends after `now` (someone waiting at a cap may go then)."""
        ends = [end for times in (*self.member_ends.values(), *self.guild_ends.values()) for end in times if end > now]
        return min(ends, default=None)


def plan(
    policy: FairShare,
    running: Sequence[Work],
    queued: Sequence[Work],
    usage: Mapping[int, float],
    workers: int = 1,
    guild_usage: Mapping[Guild, float] | None = None,
) -> list[Planned]:
    """Simulate the scheduler: running jobs (`seconds` = what is left) first, then queued jobs in run order.

    At each dispatch the server with the least usage, then its member with the least (weighted) usage,
    goes next; both are charged the whole duration of the job they get, which is what their usage will
    be when the next choice is made.
    """
    workers = max(1, workers)
    out: list[Planned] = []
    free_at = [0.0] * workers  # a heap of the times each worker becomes free
    sim = _Simulation(policy, usage, guild_usage)
    for work in sorted(running, key=lambda w: w.seconds):
        start = heapq.heappop(free_at)
        heapq.heappush(free_at, start + work.seconds)
        sim.run(work, start + work.seconds)
        out.append(Planned(work.id, 0, 0.0, start + work.seconds))
    for work in sorted(queued, key=lambda w: w.id):
        sim.add(work)
    sim.start()
    position = 0
    while sim.lanes:
        now = heapq.heappop(free_at)
        chosen = sim.next_work(now)
        if chosen is None:  # everyone waiting is at a cap: wait for the first running job to end
            later = sim.next_end(now)
            if later is None:  # cannot happen: a cap is only full while jobs run
                break
            heapq.heappush(free_at, later)
            continue
        position += 1
        out.append(Planned(chosen.id, position, now, now + chosen.seconds))
        heapq.heappush(free_at, now + chosen.seconds)
        sim.run(chosen, now + chosen.seconds)
    return out
