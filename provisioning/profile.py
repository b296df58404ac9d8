"""Tuning profiles: TOML files naming the capture setup and every knob's target and reason.

A profile is a built-in name (``latency``, ``throughput``: the TOML files beside this module) or a path.
``extends = "latency"`` starts from another profile and overrides it table by table, key by key, so a site
profile holds only what differs.  Every knob needs a one-line ``reason``; unknown knobs and keys are
errors, so a typo never silently leaves a setting untuned.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from provisioning.errors import ProfileError
from provisioning.limits import CAPTURE_QUEUES, KNOB_RANGES, NR_CPUS_MAX, cpulist_problem, out_of_range, sysctl_range
from provisioning.limits import is_bool as _bool
from provisioning.limits import is_count as _count
from provisioning.limits import is_text as _text
from provisioning.limits import one_of as _word

BUILTIN = ("latency", "throughput")
_SYSCTL_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")


def _count_or_max(v):
    return None if v == "max" or _count(v) is None else 'must be "max" or a whole number'


def _cores(v):
    if v == "auto":
        return None
    if isinstance(v, str):
        problem = cpulist_problem(v)
        return f"must be \"auto\" or a CPU list: {problem}" if problem else None
    if isinstance(v, list) and all(_count(c) is None for c in v):
        high = max(v, default=0)
        return None if high < NR_CPUS_MAX else f"names CPU {high}, out of range: CPU numbers run from 0 to " \
                                                 f"{NR_CPUS_MAX - 1}"
    return 'must be "auto", a CPU list such as "4-7", or a list of CPU numbers'


def _queues(v):
    return None if v == "auto" or (_count(v) is None and v > 0) else 'must be "auto" or a count > 0'


def _names(v):
    return None if isinstance(v, list) and all(isinstance(n, str) for n in v) else "must be a list of names"


KNOB_KEYS = {
    "irqbalance": {"mode": _word("stop", "ban")},
    "channels": {},
    "rings": {"rx": _count_or_max, "tx": _count_or_max},
    "coalesce": {"adaptive_rx": _bool, "rx_usecs": _count},
    "offloads": {"gro": _bool, "lro": _bool, "hw_gro": _bool},
    "pause": {"autoneg": _bool, "rx": _bool, "tx": _bool},
    "irq_affinity": {},
    "rps_xps": {},
    "napi": {"defer_hard_irqs": _count, "gro_flush_timeout": _count, "threaded": _bool},
    "sysctl": {},
    "hugepages": {"pages_2m": _count, "pages_1g": _count},
    "governor": {"governor": _text},
    "thp": {"mode": _word("always", "madvise", "never"),
            "defrag": _word("always", "defer", "defer+madvise", "madvise", "never")},
    "boot": {},
}
CAPTURE_KEYS = {"interfaces": _names, "cores": _cores, "queues": _queues}
SYSCTL_KEYS = {"value": _count, "at_least": _bool, "reason": _text, "enabled": _bool}
TOP_KEYS = {"name", "description", "extends", "capture", "knobs", "sysctl"}


@dataclass
class Profile:
    name: str
    description: str
    source: str                       # "builtin" or the absolute path of the file
    capture: dict = field(default_factory=dict)
    knobs: dict = field(default_factory=dict)
    sysctls: dict = field(default_factory=dict)

    def knob(self, name: str) -> dict:
        return self.knobs.get(name, {})

    def enabled(self, name: str) -> bool:
        return self.knob(name).get("enabled", True)

    @property
    def reference(self) -> str:
        """What to pass to ``--profile`` to get this profile again (the boot unit uses it)."""
        return self.name if self.source == "builtin" else self.source


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _read(ref: str, seen: tuple[str, ...]) -> tuple[dict, str]:
    if ref in seen:
        raise ProfileError(f"profile {ref} extends itself through {' -> '.join(seen)}")
    if ref in BUILTIN:
        text, source = resources.files("provisioning.profiles").joinpath(f"{ref}.toml").read_text(), "builtin"
    else:
        path = Path(ref)
        if not path.is_file():
            raise ProfileError(f"no profile {ref!r}: use {' or '.join(BUILTIN)} or the path of a TOML file")
        text, source = path.read_text(encoding="utf-8"), str(path.resolve())
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"profile {ref} is not valid TOML: {err}") from err
    data.setdefault("name", ref if source == "builtin" else Path(ref).stem)
    parent = data.pop("extends", None)
    if parent is not None:
        base, _ = _read(str(parent), seen + (ref,))
        data = _merge(base, data)
    return data, source


def _check(where: str, table, spec: dict, required: tuple[str, ...] = (), ranges: dict | None = None) -> None:
    """Keys, types, then the kernel's range (``ranges``: key -> bounds from :mod:`provisioning.limits`)."""
    if not isinstance(table, dict):
        raise ProfileError(f"{where} must be a table")
    for key, value in table.items():
        check = spec.get(key)
        if check is None:
            known = ", ".join(sorted(spec)) or "none"
            raise ProfileError(f"{where} has an unknown key {key!r} (known: {known})")
        problem = check(value)
        if problem:
            raise ProfileError(f"{where}.{key} {problem}")
        bounds = (ranges or {}).get(key)
        if bounds and isinstance(value, int) and not isinstance(value, bool):
            problem = out_of_range(f"{where}.{key}", value, bounds)
            if problem:
                raise ProfileError(problem)
    for key in required:
        if key not in table:
            raise ProfileError(f"{where} needs a {key!r}")


def validate(data: dict, ref: str) -> None:
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ProfileError(f"profile {ref} has unknown top-level keys: {', '.join(sorted(unknown))}")
    _check("capture", data.get("capture", {}), CAPTURE_KEYS, ranges={"queues": CAPTURE_QUEUES})
    knobs = data.get("knobs", {})
    if not isinstance(knobs, dict):
        raise ProfileError("knobs must be a table")
    for name, table in knobs.items():
        if name not in KNOB_KEYS:
            raise ProfileError(f"profile {ref} names an unknown knob {name!r} (known: {', '.join(KNOB_KEYS)})")
        _check(f"knobs.{name}", table, {**KNOB_KEYS[name], "enabled": _bool, "reason": _text}, ("reason",),
               {key: bounds for (knob, key), bounds in KNOB_RANGES.items() if knob == name})
    for name, table in data.get("sysctl", {}).items():
        if not _SYSCTL_NAME.match(name):
            raise ProfileError(f"{name!r} is not a sysctl name (like net.core.rmem_max)")
        _check(f"sysctl.{name}", table, SYSCTL_KEYS, ("value", "reason"), {"value": sysctl_range(name)})


def load(ref: str) -> Profile:
    """Load, merge (``extends``) and validate a profile; raises :class:`ProfileError` with one sentence."""
    data, source = _read(ref, ())
    validate(data, ref)
    return Profile(name=data["name"], description=data.get("description", ""), source=source,
                   capture=data.get("capture", {}), knobs=data.get("knobs", {}), sysctls=data.get("sysctl", {}))
