"""Retention of the recording directory: delete the oldest recordings to stay inside the budget.

``prune(directory, ...)`` looks at the recording files of ours in ``directory`` -- the recorder's names only,
``feed-YYYYmmddTHHMMSS.ffffffZ-NNNNNN.pcap`` (``capture.record``), so a file someone else put there is never
touched -- and deletes them oldest first (by the time and sequence in the name, which is the order they were
opened) while any of these holds:

* ``retain_days``: the file is older than that (its modification time, i.e. its last record);
* ``retain_bytes``: our files together are larger than that;
* ``free_floor``: the file system has less free space than that (``statvfs``, space an unprivileged writer may
  use).

The newest file of ours is never deleted: it is the one the recording process is writing (or, between two
captures, the one it wrote last), and the recorder opens its files lazily, so "the newest" is the only name
the service can be sure is not being written without asking the recording process.  A pass therefore cannot
go below one file; a budget smaller than one rotation (``rotate_size``) is kept down to the current file.

Each deletion is one :class:`Deleted` (name, bytes, why) for the caller to log and count.  A file that vanished
meanwhile is skipped; a file that cannot be deleted is reported with ``error`` set and the pass goes on.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

OURS = re.compile(r"feed-(\d{8}T\d{6}\.\d{6}Z)-(\d{6,})\.pcap")
DAY = 86400.0


@dataclass(frozen=True)
class Deleted:
    name: str
    size: int
    why: str                  # "older than N days", "over the N-byte budget", "free space under the floor"
    error: str | None = None  # set when the unlink failed (the file stays)


def ours(directory: str) -> list[tuple[str, int, float]]:
    """(name, bytes, mtime) of our recording files in ``directory``, oldest first (by name: time, sequence)."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        m = OURS.fullmatch(entry.name)
        if not m:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue                                 # a symlink or a directory with our name: not ours
        found.append(((m.group(1), int(m.group(2))), entry.name, st.st_size, st.st_mtime))
    return [(name, size, mtime) for _, name, size, mtime in sorted(found)]


def free_bytes(directory: str, statvfs=os.statvfs) -> int:
    st = statvfs(directory)
    return st.f_bavail * st.f_frsize


def prune(directory: str, retain_bytes: int | None = None, retain_days: float | None = None,
          free_floor: int | None = None, now: float | None = None, statvfs=os.statvfs) -> list[Deleted]:
    """Delete the oldest of our recordings in ``directory`` as the three limits say; what was deleted."""
    files = ours(directory)
    if len(files) <= 1:
        return []
    now = time.time() if now is None else now
    total = sum(size for _, size, _ in files)
    free = free_bytes(directory, statvfs) if free_floor else 0
    out = []
    for name, size, mtime in files[:-1]:                   # never the newest
        why = None
        if retain_days is not None and now - mtime > retain_days * DAY:
            why = f"older than {retain_days:g} days"
        elif retain_bytes is not None and total > retain_bytes:
            why = f"over the {retain_bytes:,}-byte budget"
        elif free_floor and free < free_floor:
            why = f"free space under the floor of {free_floor:,} bytes"
        if why is None:
            if retain_days is None:
                break                                      # oldest first: nothing later is over a limit either
            continue                                       # a later file may still be too old (a clock step)
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            total -= size
            continue
        except OSError as err:
            out.append(Deleted(name, size, why, err.strerror or str(err)))
            continue
        total -= size
        free = free_bytes(directory, statvfs) if free_floor else 0
        out.append(Deleted(name, size, why))
    return out
