"""A CPU renderer keeps large freed blocks for reuse: a repeated large allocation stops page-faulting."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# allocate, touch and free a 48 MiB buffer five times; print the page faults of the last four
_PROBE = """
import resource, sys
if sys.argv[1] == "tuned":
    from engine.devices import keep_freed_memory
    assert keep_freed_memory()
def touch():
    buf = bytearray(48 << 20)  # calloc'd: pages are faulted in when written
    buf[::4096] = b"x" * len(range(0, len(buf), 4096))
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is for glibc's malloc")
def test_large_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    untuned, tuned = _faults("default"), _faults("tuned")
    assert untuned > 4 * 10_000  # glibc mmaps each 48 MiB block afresh: ~12k faults each time
    assert tuned < untuned / 20
