"""What the benchmarks read of /proc: the kernel's names for TCP states."""

from __future__ import annotations

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
