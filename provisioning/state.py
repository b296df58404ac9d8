"""The state file: what apply changed and what each value was before, so revert can put it back exactly.

It is rewritten (atomically: temporary file, fsync, rename) before every change apply makes, so a crash or
a power cut in the middle of an apply still leaves a state that revert can use.  Each entry keeps the
accessor's locator, the value found before the *first* apply (a later apply never overwrites it), the
target, and the collateral values a channel change destroys.

Revert writes as root whatever this file says, so the file is trusted only when it could not have been
written by someone else: it must be a regular file owned by root, or by the user running tune (who can
then only have it write what that user could write anyway: the tests' fake root, a dry run), and no one
else may write it (group or other write permission refuses it).  Then its whole content is checked
(:mod:`provisioning.statecheck`) before any of it is used.  :func:`save_state` writes it 0644.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioning.errors import StateError
from provisioning.hostfs import HostFS
from provisioning.statecheck import check_state

STATE_VERSION = 1
DEFAULT_STATE = "/var/lib/appliance/tune-state.json"
STATE_MODE = 0o644
MAX_STATE_BYTES = 16 << 20   # thousands of entries fit in far less; a bigger file is not one tune wrote


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


def load_state(path: str | os.PathLike, fs: HostFS) -> State | None:
    """The saved state, or ``None`` when there is none.  Refuses (:class:`StateError`, one sentence) a file
    that is not trusted or not wholly valid; ``fs`` is the host whose root its paths are resolved against."""
    data = _read_trusted(Path(path))
    if data is None:
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise StateError(f"the state file {path} is not a version {STATE_VERSION} tune state")
    check_state(data, path, fs)
    entries = [Entry(**e) for e in data.pop("entries")]
    return State(entries=entries, **data)


def _read_trusted(path: Path):
    """The parsed JSON of ``path`` once its owner and mode are trusted; ``None`` when it does not exist."""
    try:
        # O_NONBLOCK: a FIFO put where the state belongs must be refused, not waited on for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError(f"the state file {path} cannot be read ({err.strerror}); inspect it before reverting "
                         "by hand") from err
    try:
        problem = trust_problem(os.fstat(fd))  # the file that is read, not whatever the name points to later
        if problem:
            raise StateError(f"refusing the state file {path}: {problem}")
        raw = os.read(fd, MAX_STATE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_STATE_BYTES:
        raise StateError(f"refusing the state file {path}: it is larger than {MAX_STATE_BYTES >> 20} MiB, "
                         "more than tune ever writes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise StateError(f"the state file {path} is not valid JSON ({str(err)[:80]}); inspect it before "
                         "reverting by hand") from None


def trust_problem(st: os.stat_result) -> str | None:
    """Why a state file with this status may not direct root's writes, or ``None``."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        owners = "root" if euid == 0 else f"root or to uid {euid}, who runs tune"
        return f"it belongs to uid {st.st_uid}, not to {owners}, so someone else chose what revert would write"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}), so someone else may "
                "have chosen what revert would write; check its contents, then chmod go-w it")
    return None


def save_state(path: str | os.PathLike, state: State) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), STATE_MODE)  # not the umask's choice: a group-writable state is refused
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
