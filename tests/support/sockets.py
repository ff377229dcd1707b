"""The TCP ports a process listens on, read from /proc as an operator's `ss -ltnp` would (Linux only)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _inodes(pid: int | str) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def _address(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # /proc prints each 32-bit word host-order
    return socket.inet_ntop(family, words)


def listening(pid: int | str = "self") -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process `pid` listens on."""
    inodes = _inodes(pid)
    found = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        table = Path(f"/proc/{pid}/net/{name}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                host, port = local.split(":")
                found.add((_address(host, family), int(port, 16)))
    return found


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick); another process could take it before it is used."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
