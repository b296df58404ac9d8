"""The state file: what apply changed and what each value was before, so revert can put it back exactly.

It is rewritten (atomically: temporary file, fsync, rename) before every change apply makes, so a crash or
a power cut in the middle of an apply still leaves a state that revert can use.  Each entry keeps the
accessor's locator, the value found before the *first* apply (a later apply never overwrites it), the
target, and the collateral values a channel change destroys.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioning.errors import StateError

STATE_VERSION = 1
DEFAULT_STATE = "/var/lib/appliance/tune-state.json"


@dataclass
class Entry:
    knob: str
    key: str
    locator: dict
    old: Any
    target: Any
    at_least: bool = False
    collateral: list[dict] = field(default_factory=list)  # [{"locator": ..., "old": ...}]


@dataclass
class State:
    profile: str                     # profile name, for messages
    profile_ref: str                 # what --profile was (name of a built-in or absolute path)
    interfaces: list[str]
    cores: dict[str, list[int]]
    entries: list[Entry] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    version: int = STATE_VERSION

    def entry(self, key: str) -> Entry | None:
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None

    def describe(self) -> str:
        return f"profile {self.profile} on {', '.join(self.interfaces)}"


def load_state(path: str | os.PathLike) -> State | None:
    """The saved state, or ``None`` when there is none."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise StateError(f"the state file {path} cannot be read ({err}); inspect it before reverting by hand") \
            from err
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise StateError(f"the state file {path} is not a version {STATE_VERSION} tune state")
    try:
        entries = [Entry(**e) for e in data.pop("entries")]
        return State(entries=entries, **data)
    except (KeyError, TypeError) as err:
        raise StateError(f"the state file {path} is damaged ({err})") from err


def save_state(path: str | os.PathLike, state: State) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_state(path: str | os.PathLike) -> None:
    Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: str | os.PathLike, shared: bool = False):
    """Hold ``<state>.lock`` while applying, reverting or verifying, so a boot-time apply and an operator's
    revert cannot interleave their writes.  Refuses at once instead of waiting."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateError(f"another appliance tune holds {lock}; wait for it to finish") from err
            raise
        yield
