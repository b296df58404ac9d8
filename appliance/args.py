"""Option values shared by the command line and the config file: their choices, limits and parsers.

``appliance capture``'s options and ``[capture]`` / ``[feeds]`` / ``[recording]`` in the config file take the
same values, so both read their choices and limits here.  Each limit has a ``*_problem`` function in the
provisioning convention (why a value is wrong, or ``None``); the ``parse_*`` functions wrap them for argparse.
This module imports nothing heavy: ``appliance config check`` and ``--help`` stay instant.
"""
from __future__ import annotations

import argparse
import ipaddress

ENGINES = ("xdp", "tpacket")
IDLE_MODES = ("poll", "nap", "spin")
XDP_MODES = ("auto", "native", "generic")
XDP_COPY_MODES = ("auto", "copy", "zerocopy")
TPACKET_VERSIONS = (3, 2)
FANOUT_MODES = ("hash", "qm", "lb", "cpu")
HOT_RT_MAX = 99                       # SCHED_FIFO priorities run from 1 to 99

# appliance.cold.rows.MIN_ROWS (four publish chunks), repeated here because importing the ring module
# compiles numba kernels; tests/test_config.py pins the two equal.
RING_ROWS_MIN = 4096
RING_ROWS_MAX = 1 << 26
RECORD_RING_MIN = 1 << 20        # cold.rows.MIN_FRAME_BYTES
RECORD_RING_MAX = 1 << 34

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; raises ``ValueError`` with one sentence for anything else."""
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    try:
        value = int(text[:-1] if unit else text) * SIZE_UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not a size (e.g. 512M, 2G)") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be positive")
    return value


def format_size(value: int) -> str:
    """The inverse of :func:`size_bytes`: the largest unit that divides ``value`` exactly (``1073741824`` -> 1G)."""
    for unit, scale in sorted(SIZE_UNITS.items(), key=lambda item: -item[1]):
        if value % scale == 0:
            return f"{value // scale}{unit}"
    raise AssertionError("unreachable: the unit of 1 divides everything")


def ring_rows_problem(value: int) -> str | None:
    if value < RING_ROWS_MIN or value & (value - 1) or value > RING_ROWS_MAX:
        return f"must be a power of two from {RING_ROWS_MIN} to {RING_ROWS_MAX}"
    return None


def group_problem(text: str) -> str | None:
    """Why ``text`` is not an IPv4 multicast group a feed line can be sent to, or ``None``."""
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        return f"{text!r} is not an IPv4 address (e.g. 233.54.12.111)"
    return None if addr.is_multicast else f"{text} is not an IPv4 multicast group (224.0.0.0/4)"


def port_problem(value: int) -> str | None:
    return None if 0 < value < 65536 else f"{value} is not a UDP port (1-65535)"


# -- argparse types ---------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    try:
        return size_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def parse_queues(text: str) -> list[int]:
    try:
        queues = sorted({int(q) for q in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--queues {text!r} is not a list like 0,1,2") from None
    if any(q < 0 for q in queues):
        raise argparse.ArgumentTypeError("--queues must be non-negative")
    return queues


def parse_ring_rows(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ring-rows {text!r} is not a number") from None
    problem = ring_rows_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"--ring-rows {problem}")
    return value


def record_ring_problem(value: int) -> str | None:
    if value < RECORD_RING_MIN or value & (value - 1) or value > RECORD_RING_MAX:
        return f"must be a power of two from {format_size(RECORD_RING_MIN)} to {format_size(RECORD_RING_MAX)}"
    return None


def parse_record_ring(text: str) -> int:
    value = parse_size(text)
    problem = record_ring_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"--record-ring {problem}, not {text}")
    return value


def parse_feed(text: str) -> tuple[int, int]:
    """GROUP:PORT -> (group as int, port); the group must be an IPv4 multicast address."""
    group, sep, port = text.rpartition(":")
    try:
        addr = ipaddress.IPv4Address(group)
        port_no = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--feed {text!r} is not GROUP:PORT (e.g. 233.54.12.1:26400)") from None
    if not sep or group_problem(group) or port_problem(port_no):
        raise argparse.ArgumentTypeError(f"--feed {text!r} needs an IPv4 multicast group and a port 1-65535")
    return int(addr), port_no
