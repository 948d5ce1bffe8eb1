"""What the benchmarks read of /proc: a process's TCP sockets by inode, and the kernel's
names for their states."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# /proc/net/tcp's `st` column (include/net/tcp_states.h), in hex.
TCP_STATES: Final = {
    "01": "established",
    "02": "syn_sent",
    "03": "syn_recv",
    "04": "fin_wait1",
    "05": "fin_wait2",
    "06": "time_wait",
    "07": "close",
    "08": "close_wait",
    "09": "last_ack",
    "0A": "listen",
    "0B": "closing",
}


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One row of /proc/<pid>/net/tcp{,6}."""

    local_port: int
    remote_ip: str
    remote_port: int
    state: str  # the kernel's hex code: TCP_STATES names it

    @property
    def state_name(self) -> str:
        """established, listen, ..."""
        return TCP_STATES.get(self.state, self.state)


def _ip(hex_address: str) -> str:
    """/proc/net/tcp's address (host byte order words) as text; IPv4-mapped IPv6 as IPv4."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 16 and words[:12] == b"\0" * 10 + b"\xff\xff":
        words = words[12:]
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def tcp_sockets(pid: int | str = "self") -> dict[str, TcpSocket]:
    """Every TCP socket of the process's network namespace, by inode."""
    found: dict[str, TcpSocket] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                parts = line.split()
                local_port = int(parts[1].split(":")[1], 16)
                address, port = parts[2].split(":")
                found[parts[9]] = TcpSocket(local_port, _ip(address), int(port, 16), parts[3])
    return found
