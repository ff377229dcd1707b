"""`QueueConfig`: the queue's knobs, and the text a member reads when the queue gives up on a job."""

from __future__ import annotations

import dataclasses

from bot.queue.admission import AdmissionLimits


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """The queue's knobs. Devices are the runner's (`ENGINE_DEVICE`); ETAs divide work among them."""

    devices: tuple[str, ...] = ("cpu",)
    priority_weight: float = 4.0
    max_running_per_member: int | None = 1
    max_queued_per_member: int | None = 10
    max_queued_per_guild: int | None = 100
    max_running_per_guild: int | None = None
    admission: AdmissionLimits = dataclasses.field(default_factory=AdmissionLimits)
    min_free_disk_bytes: int = 0  # below it, new jobs are refused and none is claimed (0: never)
    keep_results_s: float | None = None  # results are deleted this long after their job ended (None: kept)
    housekeeping_every_s: float = 3600.0  # how often expired results and crash leftovers are looked for
    disk_full_pause_s: float = 60.0  # after a render found the disk full, no job is claimed for this long
    max_attempts: int | None = 3  # a job interrupted this many times (crash, stall) is failed, not rendered again
    lease_s: float = 30.0  # the workers' lease: one whose heartbeat is three leases old is gone (ETAs, /queue)
    relay_progress_s: float | None = None  # share progress and cancels with other processes this often (None: off)


def attempts_text(attempts: int) -> str:
    """What the owner reads (channel and /job) when a job is given up on after crashes or stalls."""
    return f"failed after {attempts} attempts; the bot restarted while rendering it each time"
