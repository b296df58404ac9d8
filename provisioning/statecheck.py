"""The whole state file checked before any of it is used: its shape, every locator, every value, every path.

A state file is only data, and revert acts on it as root.  So the file is checked from top to bottom first,
and one problem anywhere refuses all of it: a revert that stops halfway through a hostile file would leave
the host half restored and the file still there to fail again.  What may be named comes from
:mod:`provisioning.owned`; where a path really leads is checked against the host's root with
:meth:`HostFS.confine` (``..`` and symlinks out of /sys, /proc or /etc are refused).
"""
from __future__ import annotations

import re

from provisioning.errors import StateError
from provisioning.hostfs import CONFIG_AREAS, KERNEL_AREAS, HostFS, Outside
from provisioning.knobs import ORDER
from provisioning.limits import NR_CPUS_MAX
from provisioning.owned import line, locator_problem, value_problem

TOP_KEYS = {"profile", "profile_ref", "interfaces", "cores", "entries", "created", "version"}
ENTRY_KEYS = {"knob", "key", "locator", "old", "target", "at_least", "collateral"}
ENTRY_REQUIRED = {"knob", "key", "locator", "old", "target"}
KNOBS = {name for name, _ in ORDER}
# dev_valid_name(): shorter than IFNAMSIZ, not "." or "..", no "/", ":" or white space.
_IFNAME = re.compile(r"^(?!\.\.?$)[^/:\s]{1,15}$")


class Refused(Exception):
    """One problem in the state file; :func:`check_state` turns it into a :class:`StateError`."""


def check_state(data, path, fs: HostFS) -> None:
    """Raise :class:`StateError` (one sentence) unless the whole file is a state tuning could have written."""
    try:
        interfaces = _check_top(data)
        seen: set[str] = set()
        for number, entry in enumerate(data["entries"], 1):
            _check_entry(number, entry, interfaces, fs, seen)
    except Refused as err:
        raise StateError(f"refusing the state file {path}: {err}; nothing was changed "
                         "(inspect the file, or restore the values by hand)") from None


def _check_top(data) -> list[str]:
    if not isinstance(data, dict) or set(data) != TOP_KEYS:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise Refused(f"its top level holds {found}, not {sorted(TOP_KEYS)}")
    for key in ("profile", "profile_ref", "created"):
        if not line(data[key], 4096):
            raise Refused(f"its {key} is not a short printable string")
    interfaces = data["interfaces"]
    if not isinstance(interfaces, list) or not interfaces or \
            not all(isinstance(i, str) and _IFNAME.match(i) and i.isprintable() for i in interfaces):
        raise Refused("its interfaces are not a list of interface names")
    cores = data["cores"]
    if not isinstance(cores, dict) or not set(cores) <= set(interfaces) or not all(
            isinstance(c, list) and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < NR_CPUS_MAX
                                        for n in c) for c in cores.values()):
        raise Refused("its cores are not CPU numbers for its interfaces")
    if not isinstance(data["entries"], list):
        raise Refused("its entries are not a list")
    return interfaces


def _check_entry(number: int, entry, interfaces: list[str], fs: HostFS, seen: set[str]) -> None:
    if not isinstance(entry, dict) or not ENTRY_REQUIRED <= set(entry) <= ENTRY_KEYS:
        raise Refused(f"entry {number} is not an object with the keys {sorted(ENTRY_REQUIRED)}")
    key, knob = entry["key"], entry["knob"]
    if not line(key) or key in seen:
        raise Refused(f"entry {number} has a missing, unprintable or repeated key")
    seen.add(key)
    where = f"entry {number} ({key})"
    if not isinstance(knob, str) or knob not in KNOBS:
        raise Refused(f"{where} belongs to an unknown knob {knob!r}")
    if not isinstance(entry.get("at_least", False), bool):
        raise Refused(f"{where} has an at_least that is not true or false")
    _check_setting(where, knob, entry["locator"], {"old": entry["old"], "target": entry["target"]},
                   interfaces, fs, collateral=False)
    collateral = entry.get("collateral", [])
    if not isinstance(collateral, list) or (collateral and not (entry["locator"]["kind"] == "ethtool"
                                                                 and entry["locator"]["group"] == "channels")):
        raise Refused(f"{where} has collateral values, which only a channel count has")
    for item in collateral:
        if not isinstance(item, dict) or set(item) != {"locator", "old"}:
            raise Refused(f"{where} has a collateral value that is not a locator and an old value")
        _check_setting(f"{where}, collateral", knob, item["locator"], {"old": item["old"]}, interfaces, fs,
                       collateral=True)


def _check_setting(where: str, knob: str, locator, values: dict, interfaces: list[str], fs: HostFS,
                   collateral: bool) -> None:
    problem = locator_problem(knob, locator, interfaces, collateral)
    if problem:
        raise Refused(f"{where} {problem}")
    for name, value in values.items():
        problem = value_problem(locator, value)
        if problem:
            raise Refused(f"{where}: its {name} value {_short(value)} {problem}")
    kind = locator["kind"]
    try:
        if kind == "attr":
            fs.confine(locator["path"], KERNEL_AREAS)
        elif kind in ("file", "link"):
            fs.confine(locator["path"], CONFIG_AREAS, follow_last=False)
    except Outside as err:
        raise Refused(f"{where}: {err}") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
