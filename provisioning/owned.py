"""What each knob may own: the only paths, ethtool fields, features, services and files a state file may name.

``revert`` runs as root and writes back whatever the state file's locators name, so a locator is data to be
checked, never trusted: each one must describe something its knob could have produced, and each value must
have the type its accessor reads.  The table follows the knobs (the ethtool names and the /etc accessors are
imported from them; the attribute paths restate the knobs' templates as patterns), and
``tests/test_tune_state.py`` checks that every locator the knobs produce on the fake machine passes, so the
table cannot fall behind a knob.  Where a path resolves to is checked separately, against the host's root
(:meth:`HostFS.confine`).
"""
from __future__ import annotations

import re

from provisioning.knobs.boot import UNIT_NAME, UNIT_PATH, WANTS_TARGET, persist_accessors
from provisioning.knobs.nic import CHANNELS, COALESCE, FEATURES, PAUSE, RINGS
from provisioning.knobs.system import irqbalance_accessors
from provisioning.limits import U32_MAX, ULONG_MAX, cpulist_problem

_IF = r"(?P<iface>[^/\s]+)"
_N = r"(?:0|[1-9][0-9]{0,8})"
_PAGES = r"hugepages-(?:2048kB|1048576kB)"
_QUEUES = rf"/sys/class/net/{_IF}/queues"


def _paths(*rows: tuple[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(pattern), codec) for pattern, codec in rows]


# knob -> (path pattern, codec) of every attribute it may write (knobs/queues.py and knobs/system.py).
ATTRS = {
    "rps_xps": _paths((rf"{_QUEUES}/rx-{_N}/rps_cpus", "cpumask"), (rf"{_QUEUES}/tx-{_N}/xps_cpus", "cpumask")),
    "napi": _paths((rf"/sys/class/net/{_IF}/(?:napi_defer_hard_irqs|gro_flush_timeout|threaded)", "int")),
    "sysctl": _paths((r"/proc/sys/[a-z0-9_]+(?:/[a-z0-9_-]+)+", "int")),
    "hugepages": _paths((rf"/sys/devices/system/node/node{_N}/hugepages/{_PAGES}/nr_hugepages", "int"),
                        (rf"/sys/kernel/mm/hugepages/{_PAGES}/nr_hugepages", "int")),
    "governor": _paths((rf"/sys/devices/system/cpu/(?:cpufreq/policy{_N}|cpu{_N}/cpufreq)/scaling_governor", "text")),
    "thp": _paths((r"/sys/kernel/mm/transparent_hugepage/(?:enabled|defrag)", "select")),
}
# What a channel change destroys and revert puts back (accessors.ChannelCount._QUEUE_ATTRS).
COLLATERAL_ATTRS = _paths(
    (rf"{_QUEUES}/rx-{_N}/rps_cpus", "cpumask"), (rf"{_QUEUES}/rx-{_N}/rps_flow_cnt", "int"),
    (rf"{_QUEUES}/tx-{_N}/(?:xps_cpus|xps_rxqs)", "cpumask"), (rf"{_QUEUES}/tx-{_N}/tx_maxrate", "int"))
ETHTOOL = {"channels": CHANNELS, "rings": RINGS, "coalesce": tuple(COALESCE.values()), "pause": PAUSE}
KINDS = {"irqbalance": ("service", "file"), **{group: ("ethtool",) for group in ETHTOOL},
         "offloads": ("feature",), "irq_affinity": ("irq",), **{knob: ("attr",) for knob in ATTRS},
         "persist": ("file", "link")}
LOCATOR_KEYS = {"attr": {"path", "codec"}, "irq": {"irq", "name"}, "ethtool": {"iface", "group", "field"},
                "feature": {"iface", "name"}, "service": {"name"}, "file": {"path", "restart", "mode", "anchor"},
                "link": {"path", "anchor"}}
# The /etc files and links, exactly as the knobs build them (no host is needed to ask for a locator).
FIXED = {"irqbalance": [a.locator() for a in irqbalance_accessors(None, None)],
         "persist": [a.locator() for a in persist_accessors(None, None)]}
# revert starts irqbalance again from its recorded command line, as root: only the daemon itself.
DAEMON_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin")
_WORD = re.compile(r"^[A-Za-z0-9_+.\-]{1,64}$")
_CPUMASK = re.compile(r"^[0-9a-fA-F]{1,8}(?:,[0-9a-fA-F]{1,8}){0,1023}$")
MAX_FILE = 1 << 20


def line(value, limit: int = 256) -> bool:
    """A short printable string: safe to show on a terminal and to compare."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def locator_problem(knob: str, locator, interfaces: list[str], collateral: bool = False) -> str | None:
    """Why ``locator`` is not something ``knob`` could own (``None`` when it is).  Paths are checked as
    text here; where they lead is checked against the root by the caller."""
    if not isinstance(locator, dict):
        return "has a locator that is not an object"
    kind = locator.get("kind")
    allowed = ("attr", "irq") if collateral else KINDS.get(knob, ())
    if kind not in allowed:
        return f"has a locator of kind {kind!r}, which the {knob} knob never writes"
    if set(locator) != LOCATOR_KEYS[kind] | {"kind"}:
        return f"has a {kind} locator with the keys {sorted(map(str, locator))}"
    if kind in ("file", "link"):
        return None if locator in FIXED.get(knob, []) else \
            f"names {locator.get('path')!r} (or options for it) that the {knob} knob never writes"
    if kind == "attr":
        return _attr_problem(knob, locator, interfaces, collateral)
    if kind == "irq":
        ok = isinstance(locator["irq"], int) and not isinstance(locator["irq"], bool) and \
            0 <= locator["irq"] <= U32_MAX and line(locator["name"])
        return None if ok else "has an irq locator whose number or name is not valid"
    if kind == "service":
        return None if locator["name"] == "irqbalance" else f"names the service {locator['name']!r}"
    if locator["iface"] not in interfaces:
        return f"names the interface {locator['iface']!r}, which is not one this tuning was applied to"
    if kind == "feature":
        return None if locator["name"] in FEATURES.values() else f"names the feature {locator['name']!r}"
    if locator["group"] != knob or locator["field"] not in ETHTOOL[knob]:
        return f"names the ethtool field {locator['group']!r} {locator['field']!r}, not one of the {knob} knob's"
    return None


def _attr_problem(knob: str, locator: dict, interfaces: list[str], collateral: bool) -> str | None:
    path, codec = locator["path"], locator["codec"]
    if not isinstance(path, str):
        return "has an attribute path that is not a string"
    for pattern, want in COLLATERAL_ATTRS if collateral else ATTRS[knob]:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        if codec != want:
            return f"reads {path!r} as {codec!r}, not as {want!r}"
        iface = match.groupdict().get("iface")
        if iface is not None and iface not in interfaces:
            return f"names {path!r}, on an interface this tuning was not applied to"
        return None
    return f"names {path!r}, which the {knob} knob never writes"


def value_problem(locator: dict, value) -> str | None:
    """Why ``value`` is not of the type the locator's accessor reads and writes (``None`` when it is)."""
    kind = locator["kind"]
    if kind == "attr":
        codec = locator["codec"]
        if codec == "int":
            return None if _int(value, -(2**63), ULONG_MAX) else "is not an integer the kernel can hold"
        if codec == "cpumask":
            return None if isinstance(value, str) and _CPUMASK.match(value) else "is not a CPU mask"
        return None if isinstance(value, str) and _WORD.match(value) else "is not a single word"
    if kind == "irq":
        if not isinstance(value, str):
            return "is not a CPU list"
        return cpulist_problem(value)
    if kind == "ethtool":
        if locator["group"] == "pause":
            return None if isinstance(value, bool) else "is not true or false"
        return None if _int(value, 0, U32_MAX) else f"is not an ethtool u32 (0 to {U32_MAX})"
    if kind == "feature":
        return None if isinstance(value, bool) else "is not true or false"
    if kind == "service":
        return _service_problem(locator["name"], value)
    if kind == "file":
        ok = value is None or (isinstance(value, str) and len(value) <= MAX_FILE and "\0" not in value)
        return None if ok else "is not a configuration file's text"
    # A link tuning made: absent, or the unit it enables (relative as tuning writes it, absolute as
    # systemctl enable does); any other target would enable another unit at boot.
    return None if value in (None, WANTS_TARGET, UNIT_PATH) else f"is not absent or a link to {UNIT_NAME}"


def _int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _service_problem(name: str, value) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("active"), bool):
        return "is not a service state"
    if set(value) - {"active", "manager", "cmdline"} or value.get("manager", "systemd") not in ("systemd", "process"):
        return "is not a service state"
    if "cmdline" not in value:
        return None
    cmdline = value["cmdline"]
    if not isinstance(cmdline, list) or not 0 < len(cmdline) <= 64 or not all(line(a, 4096) for a in cmdline):
        return "has a command line that is not a list of arguments"
    if cmdline[0] != name and cmdline[0] not in {f"{d}/{name}" for d in DAEMON_DIRS}:
        return f"would start {cmdline[0]!r} as root, which is not {name} from a system directory"
    return None
