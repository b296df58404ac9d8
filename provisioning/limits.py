"""The ranges the kernel accepts for each number tuning writes, and the check a profile value goes through.

A number outside the kernel's type is not a setting the kernel will hold: ``rx_usecs = 99999999999999999999``
does not fit ethtool's ``__u32``, so the ioctl would fail (or worse, wrap) in the middle of an apply.  Each
row names the kernel type the value ends up in, so the refusal can say why the bound is what it is.

Sources (Linux 6.x): ``struct ethtool_coalesce`` / ``ethtool_ringparam`` / ``ethtool_channels`` fields and the
``ETHTOOL_A_*`` netlink attributes are ``__u32``; ``net-sysfs.c`` refuses ``napi_defer_hard_irqs`` above
``S32_MAX`` (-ERANGE) and parses ``gro_flush_timeout`` and ``nr_hugepages`` as ``unsigned long``; the
``net.core`` sysctls below are ``int`` (``proc_dointvec*``), and no sysctl handler parses more than an
``unsigned long`` (``proc_doulongvec_minmax``).  CPU numbers stop below ``CONFIG_NR_CPUS``, at most 8192 on
x86_64 (``MAXSMP``).
"""
from __future__ import annotations

import re

U32_MAX = 2**32 - 1
S32_MAX = 2**31 - 1
ULONG_MAX = 2**64 - 1
NR_CPUS_MAX = 8192

# (low, high, the kernel's name for the type) per profile key; ring sizes start at 1 because a ring of no
# descriptors receives nothing and every driver refuses it.
KNOB_RANGES: dict[tuple[str, str], tuple[int, int, str]] = {
    ("rings", "rx"): (1, U32_MAX, "ethtool's u32 rx ring size"),
    ("rings", "tx"): (1, U32_MAX, "ethtool's u32 tx ring size"),
    ("coalesce", "rx_usecs"): (0, U32_MAX, "ethtool's u32 rx-usecs"),
    ("napi", "defer_hard_irqs"): (0, S32_MAX, "napi_defer_hard_irqs, which the kernel caps at S32_MAX"),
    ("napi", "gro_flush_timeout"): (0, ULONG_MAX, "gro_flush_timeout, an unsigned long"),
    ("hugepages", "pages_2m"): (0, ULONG_MAX, "nr_hugepages, an unsigned long"),
    ("hugepages", "pages_1g"): (0, ULONG_MAX, "nr_hugepages, an unsigned long"),
}
CAPTURE_QUEUES = (1, U32_MAX, "ethtool's u32 channel count")

# Integer sysctls whose handler is proc_dointvec*: a value above INT_MAX is refused with EINVAL.
INT_SYSCTLS = frozenset(f"net.core.{name}" for name in (
    "rmem_max", "rmem_default", "wmem_max", "wmem_default", "optmem_max", "netdev_max_backlog",
    "netdev_budget", "netdev_budget_usecs", "dev_weight", "busy_read", "busy_poll", "somaxconn"))


# Value checks, shared by tuning profiles and the appliance config file: each returns why a value read from
# TOML is wrong (the rest of the sentence after its key), or None.
def is_bool(v) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def is_count(v) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be a whole number >= 0"


def is_text(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def one_of(*choices):
    def check(v) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)
    return check


def sysctl_range(name: str) -> tuple[int, int, str]:
    if name in INT_SYSCTLS:
        return 0, S32_MAX, f"{name}, an int sysctl"
    return 0, ULONG_MAX, "the widest integer a sysctl takes (unsigned long)"


def out_of_range(where: str, value, bounds: tuple[int, int, str]) -> str | None:
    """One sentence when ``value`` (already known to be an int) is outside ``bounds``, else ``None``."""
    low, high, what = bounds
    if low <= value <= high:
        return None
    return f"{where} = {value} is out of range: {what} takes {low} to {high}"


_CPULIST = re.compile(r"^\s*\d+(?:\s*-\s*\d+)?(?:\s*,\s*\d+(?:\s*-\s*\d+)?)*\s*$")


def cpulist_problem(text: str) -> str | None:
    """Why ``text`` is not a CPU list the kernel could hold (``4-7,12``), or ``None``.

    Checked before :func:`~provisioning.topology.parse_cpulist` expands it: ``4-99999999999`` would otherwise
    build a list of a hundred billion CPUs."""
    if not _CPULIST.match(text):
        return f"{text!r} is not a CPU list such as 4-7 or 1,3,5"
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if last < first:
            return f"the CPU range {part.strip()} runs backwards"
        if last >= NR_CPUS_MAX:
            return f"CPU {last} in {text.strip()!r} is out of range: CPU numbers run from 0 to {NR_CPUS_MAX - 1}"
    return None
