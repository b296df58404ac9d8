"""A setting: one value the host holds, the value tuning wants there, why, and how to read and write it.

Knobs produce settings; plan shows them, apply writes the ones whose status is ``change``, and the state
file keeps, per setting, the accessor's ``locator`` (enough to rebuild it in a later process), the value
found before the first apply and the target.  Values are JSON types: ints, bools, strings, small dicts.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from provisioning.errors import Unsupported

OK = "ok"                    # already at target
CHANGE = "change"            # apply will write it
CHANGED = "changed"          # apply wrote it
UNSUPPORTED = "unsupported"  # this driver or host does not offer it
REBOOT = "reboot"            # report only: needs the kernel command line and a reboot
DISABLED = "disabled"        # switched off in the profile


class Accessor(ABC):
    """Reads and writes one setting.  ``locator()`` must be enough for :func:`accessors.rebuild`."""

    kind: str = ""

    @abstractmethod
    def locator(self) -> dict: ...

    @abstractmethod
    def read(self) -> Any:
        """The current value; raises :class:`Unsupported` when the host does not have the setting."""

    @abstractmethod
    def write(self, value: Any) -> None: ...

    @abstractmethod
    def where(self) -> str:
        """Where the value lives, as an operator would look for it (a path, an ethtool option)."""

    def same(self, current: Any, target: Any, at_least: bool = False) -> bool:
        if at_least and isinstance(current, int) and isinstance(target, int):
            return current >= target
        return current == target

    def refuses_write(self) -> str | None:
        """Why a write cannot work here (read-only attribute, fixed feature), checked before planning one."""
        return None

    def collateral(self) -> list["Accessor"]:
        """Other values a write may destroy (queue attributes when the queue count shrinks)."""
        return []

    def show(self, value: Any) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return "-" if value is None else str(value)


@dataclass
class Setting:
    knob: str
    key: str
    reason: str
    accessor: Accessor | None = None
    target: Any = None
    at_least: bool = False
    current: Any = None
    status: str = CHANGE
    note: str = ""
    extra: dict = field(default_factory=dict)

    def evaluate(self) -> "Setting":
        """Read the current value and decide between ok, change and unsupported."""
        if self.status in (UNSUPPORTED, REBOOT, DISABLED) or self.accessor is None:
            return self
        try:
            self.current = self.accessor.read()
        except Unsupported as err:
            self.status, self.note = UNSUPPORTED, str(err)
            return self
        if self.accessor.same(self.current, self.target, self.at_least):
            self.status = OK
            return self
        refusal = self.accessor.refuses_write()
        if refusal:
            self.status, self.note = UNSUPPORTED, refusal
        else:
            self.status = CHANGE
        return self

    def show_target(self) -> str:
        if self.accessor is None:
            return "-" if self.target is None else str(self.target)
        text = self.accessor.show(self.target)
        return f">= {text}" if self.at_least else text

    def show_current(self) -> str:
        if self.accessor is None or self.current is None:
            return "-" if self.current is None else str(self.current)
        return self.accessor.show(self.current)

    def row(self) -> dict:
        """The JSON form used by ``--json``."""
        return {
            "knob": self.knob, "key": self.key, "where": self.accessor.where() if self.accessor else None,
            "current": self.current, "target": self.target, "at_least": self.at_least,
            "status": self.status, "reason": self.reason, "note": self.note, **self.extra,
        }


def unsupported(knob: str, key: str, reason: str, note: str) -> Setting:
    return Setting(knob, key, reason, status=UNSUPPORTED, note=note)


def disabled(knob: str, reason: str) -> Setting:
    return Setting(knob, knob, reason, status=DISABLED, note="switched off in the profile")
