"""Worker ids per process slot: unique beside each other on one data directory, the same again after a restart."""

from __future__ import annotations

from pathlib import Path

from bot.queue.worker_slot import hold_worker_slot


def test_a_second_holder_gets_the_next_slot_and_a_freed_slot_is_reused(tmp_path: Path) -> None:
    first = hold_worker_slot(tmp_path, hostname="gpu-host")
    second = hold_worker_slot(tmp_path, hostname="gpu-host")
    assert first.worker_id.startswith("gpu-host-")
    assert first.worker_id.endswith("-1")
    assert second.worker_id.endswith("-2")
    first.close()  # as when that process ends
    again = hold_worker_slot(tmp_path, hostname="gpu-host")
    assert again.worker_id == first.worker_id
    second.close()
    again.close()


def test_two_data_directories_on_one_host_never_share_an_id(tmp_path: Path) -> None:
    a = hold_worker_slot(tmp_path / "a", hostname="gpu-host")
    b = hold_worker_slot(tmp_path / "b", hostname="gpu-host")
    assert a.worker_id != b.worker_id
    a.close()
    b.close()
