"""The checks behind each key of the config file, and :func:`key`, which makes a dataclass field a TOML key.

Each check follows provisioning's convention (:mod:`provisioning.limits`): it takes the value ``tomllib`` read
and returns why it is wrong (the rest of a sentence that starts with the key), or ``None``.  The limits of the
capture options come from :mod:`appliance.args`, shared with the command line.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from dataclasses import field

from appliance import args as A
from provisioning.limits import NR_CPUS_MAX, is_count


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def int_from(low: int, high: int | None = None):
    def check(v) -> str | None:
        if is_int(v) and v >= low and (high is None or v <= high):
            return None
        return f"must be a whole number from {low} to {high}" if high is not None else \
            f"must be a whole number >= {low}"
    return check


positive = int_from(1)


def _amount(unit: str):
    def check(v) -> str | None:
        ok = (is_int(v) or isinstance(v, float)) and math.isfinite(v) and v > 0
        return None if ok else f"must be a positive number of {unit}"
    return check


seconds, days = _amount("seconds"), _amount("days")


def size(v) -> str | None:
    if is_int(v):
        return None if v > 0 else "must be a positive number of bytes"
    if not isinstance(v, str):
        return 'must be a size such as "512M" or "2G", or a number of bytes'
    try:
        A.size_bytes(v)
    except ValueError:
        return f'must be a positive size such as "512M" or "2G" (not {v!r})'
    return None


def to_bytes(v) -> int:
    return v if is_int(v) else A.size_bytes(v)


def absolute(v) -> str | None:
    if not isinstance(v, str) or not v or "\0" in v:
        return "must be a path"
    return None if os.path.isabs(v) else f"must be an absolute path ({v!r} is relative)"


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def name(v) -> str | None:
    ok = isinstance(v, str) and _NAME.match(v)
    return None if ok else "must be a name of 1 to 32 letters, digits, '_', '.' or '-'"


def iface(v) -> str | None:
    # The kernel's dev_valid_name(): under IFNAMSIZ (16) bytes, no '/', ':' or white space, not . or ..
    ok = isinstance(v, str) and 0 < len(v.encode()) < 16 and v not in (".", "..") and \
        not any(ch in "/:" or ch.isspace() for ch in v)
    return None if ok else "must be a network interface name (1 to 15 characters, no '/', ':' or spaces)"


def cpu(v) -> str | None:
    return None if is_int(v) and 0 <= v < NR_CPUS_MAX else f"must be a CPU number from 0 to {NR_CPUS_MAX - 1}"


def _numbers(item_check, what: str):
    def check(v) -> str | None:
        if not isinstance(v, list) or not v:
            return f"must be a non-empty list of {what}"
        for item in v:
            if item_check(item):
                return f"must be a list of {what}: {item!r} {item_check(item)}"
        return None if len(set(v)) == len(v) else f"names the same {what[:-1]} twice"
    return check


cpus = _numbers(cpu, "CPU numbers")
_queue_list = _numbers(is_count, "queue numbers")


def queues(v) -> str | None:
    ok = v == "all" or _queue_list(v) is None
    return None if ok else 'must be "all" or a list of distinct queue numbers (0 or more)'


def ring_rows(v) -> str | None:
    return "must be a whole number" if not is_int(v) else A.ring_rows_problem(v)


def power_of_two(v) -> str | None:
    return None if is_int(v) and v > 0 and not v & (v - 1) else "must be a power of two"


def group(v) -> str | None:
    if not isinstance(v, str):
        return 'must be an IPv4 multicast group such as "233.54.12.111"'
    problem = A.group_problem(v)
    return f"must be an IPv4 multicast group: {problem}" if problem else None


def port(v) -> str | None:
    return None if is_int(v) and not A.port_problem(v) else f"must be a UDP port from 1 to 65535 (not {v!r})"


def listen(v) -> str | None:
    """host:port, where host is an IPv4 address, a bracketed IPv6 address or a host name."""
    host, sep, port = v.rpartition(":") if isinstance(v, str) else ("", "", "")
    if not sep or not port.isdigit() or A.port_problem(int(port)):
        return 'must be HOST:PORT such as "127.0.0.1:9108" or "[::1]:9108"'
    try:
        if host.startswith("[") and host.endswith("]"):
            ipaddress.IPv6Address(host[1:-1])
        elif not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", host):
            return f"has {host!r}, which is not an IPv4 address, a bracketed IPv6 address or a host name"
        elif re.match(r"^[0-9.]+$", host):
            ipaddress.IPv4Address(host)
    except ValueError:
        return f"has {host!r}, which is not an IP address"
    return None


def nats_urls(v) -> str | None:
    """A non-empty list of server URLs: nats://HOST:PORT (or tls://)."""
    if not isinstance(v, list) or not v:
        return "must be a non-empty list of server URLs like \"nats://127.0.0.1:4222\""
    for url in v:
        if not isinstance(url, str) or not re.fullmatch(r"(nats|tls)://[^\s/:]+(:\d{1,5})?", url):
            return f"must be a list of server URLs like \"nats://127.0.0.1:4222\": {url!r} is not one"
    return None if len(set(v)) == len(v) else "names the same server twice"


def key(check, default=dataclasses.MISSING, convert=None, show=None):
    """A dataclass field that is a key of its TOML table.  No default: the key is required.  ``None``: it may
    be absent (and is not printed).  ``convert`` turns the checked TOML value into the field's value, ``show``
    turns it back for printing."""
    meta = {"check": check, "convert": convert, "show": show}
    return field(default=default, metadata=meta)


def size_key(default):
    return key(size, default, to_bytes, A.format_size)


def as_tuple(v):
    return tuple(v) if isinstance(v, list) else v
