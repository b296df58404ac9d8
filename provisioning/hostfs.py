"""The one module that reads and writes /sys, /proc and the few /etc files tuning owns.

psutil's habit: no path is hard-coded against ``/``; every path is relative and joined to ``root``, so the
tests point the whole provisioning layer at a fake tree.  A write records the value it replaces before it
writes (netsniff-ng's ``irq.c`` does this for ``smp_affinity_list``), which is what makes revert exact.
With ``dry_run`` a write is recorded in the journal and not performed.

Kernel attributes (sysfs, procfs) and configuration files are written differently on purpose: an attribute
is opened ``O_WRONLY | O_TRUNC`` without ``O_CREAT`` (a missing attribute is an error, never a new file in a
fake tree that hides a typo), a configuration file is written to a temporary name and renamed into place.

Every write is confined (:meth:`HostFS.confine`): an attribute must resolve, symlinks followed, inside the
root's ``/sys`` or ``/proc``, a configuration file or link must sit in a directory that resolves inside
``/etc``.  Paths come from knobs and, on revert, from the state file; whatever a path says, a write never
leaves those areas of the root.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

ABSENT = None  # the recorded "old value" of a configuration file or link that did not exist
KERNEL_AREAS = ("sys", "proc")   # where attributes live
CONFIG_AREAS = ("etc",)          # where tuning's configuration files and links live


class Outside(ValueError):
    """A path that leaves the areas tuning may write (``..``, a symlink out of them, another directory)."""


@dataclass(frozen=True)
class Write:
    """One journal record: which path, what it held before, what was (or would have been) written."""

    path: str
    old: str | None
    new: str | None


class HostFS:
    """Reads and writes under ``root``; ``journal`` lists every write in order, performed or not."""

    def __init__(self, root: str | os.PathLike = "/", dry_run: bool = False):
        self.root = Path(root)
        self.dry_run = dry_run
        self.journal: list[Write] = []

    def __repr__(self) -> str:
        return f"HostFS(root={str(self.root)!r}, dry_run={self.dry_run})"

    # -- paths ---------------------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """The real path of ``rel`` (written as on a live host, e.g. ``/proc/sys/net/core/rmem_max``)."""
        return self.root / rel.lstrip("/")

    def show(self, rel: str) -> str:
        """``rel`` as an operator would type it on the host."""
        return "/" + rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def is_dir(self, rel: str) -> bool:
        return self.path(rel).is_dir()

    def is_writable(self, rel: str) -> bool:
        """Whether the attribute's mode lets anyone write it.

        ``os.access`` is useless here: root passes it for any regular file, but procfs and sysfs refuse
        writes to 0444 attributes even for root (``net.core.rmem_max`` inside a network namespace is one).
        """
        try:
            return bool(os.stat(self.path(rel)).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        except FileNotFoundError:
            return False

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching ``pattern`` (relative too), sorted."""
        return sorted("/" + str(p.relative_to(self.root)) for p in self.root.glob(pattern.lstrip("/")))

    def resolve(self, rel: str) -> str:
        """``rel`` with symlinks resolved, still relative to the root (sysfs class links point into devices)."""
        real = os.path.realpath(self.path(rel))
        root = os.path.realpath(self.root)
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise ValueError(f"{self.show(rel)} resolves outside {root}")
        return "/" + os.path.relpath(real, root)

    def confine(self, rel: str, areas: tuple[str, ...], follow_last: bool = True) -> Path:
        """The real path of ``rel`` once it is known to stay inside one of ``areas`` of the root.

        ``rel`` must be a plain absolute path (no ``.``, ``..`` or empty component) whose first directory is
        one of ``areas``, and it must still be inside that directory once symlinks are resolved: the whole
        path for an attribute (``open`` follows the last link), the parent for a file or link that is
        replaced or removed (``rename`` and ``unlink`` act on the link itself).  Raises :class:`Outside`."""
        parts = rel.split("/")
        if parts[0] != "" or len(parts) < 3 or any(p in ("", ".", "..") for p in parts[1:]) or "\0" in rel:
            raise Outside(f"{rel!r} is not a plain absolute path below {self._areas(areas)}")
        if parts[1] not in areas:
            raise Outside(f"{self.show(rel)} is outside {self._areas(areas)}")
        path = self.path(rel)
        real = os.path.realpath(path if follow_last else path.parent)
        area = os.path.realpath(self.root / parts[1])
        if real != area and not real.startswith(area.rstrip("/") + "/"):
            raise Outside(f"{self.show(rel)} leads through a symlink to {real!r}, outside /{parts[1]}")
        return path

    @staticmethod
    def _areas(areas: tuple[str, ...]) -> str:
        return " or ".join(f"/{a}" for a in areas)

    # -- kernel attributes ---------------------------------------------------------------------------------
    def read(self, rel: str) -> str:
        """An attribute's value without its trailing newline."""
        with open(self.path(rel), encoding="ascii", errors="replace") as f:
            return f.read().rstrip("\n")

    def read_text(self, rel: str) -> str:
        """A whole multi-line procfs file (``/proc/interrupts``, ``/proc/cpuinfo``)."""
        with open(self.path(rel), encoding="utf-8", errors="replace") as f:
            return f.read()

    def write(self, rel: str, value: str) -> Write:
        """Write a kernel attribute, recording what it held first.  Raises ``OSError`` as the kernel does,
        :class:`Outside` for a path outside /sys and /proc."""
        self.confine(rel, KERNEL_AREAS)
        record = Write(rel, self.read(rel), value)
        self.journal.append(record)
        if not self.dry_run:
            self._write_attr(self.path(rel), value)
        return record

    def _write_attr(self, path: Path, value: str) -> None:
        # One write() call: sysfs and procfs parse exactly the buffer of a single write.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)

    # -- configuration files and links (/etc) --------------------------------------------------------------
    def read_file(self, rel: str) -> str | None:
        """A configuration file's content, or ``None`` when it does not exist."""
        try:
            with open(self.path(rel), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ABSENT

    def _prune(self, rel: str, below: str | None) -> None:
        """Remove the now-empty directories between ``rel`` and ``below`` (which stays), so that removing
        the last file put under, say, ``multi-user.target.wants`` leaves the tree as it was."""
        if below is None:
            return
        stop = self.path(below)
        parent = self.path(rel).parent
        while parent != stop and stop in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty (someone else's file is there) or already gone
                return
            parent = parent.parent

    def put_file(self, rel: str, content: str | None, mode: int = 0o644, prune_below: str | None = None) -> Write:
        """Create, replace (atomically) or, with ``None``, remove a configuration file under /etc."""
        self.confine(rel, CONFIG_AREAS, follow_last=False)
        if prune_below is not None:
            self.confine(prune_below, CONFIG_AREAS)
        record = Write(rel, self.read_file(rel), content)
        self.journal.append(record)
        if self.dry_run:
            return record
        path = self.path(rel)
        if content is None:
            path.unlink(missing_ok=True)
            self._prune(rel, prune_below)
            return record
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return record

    def read_link(self, rel: str) -> str | None:
        try:
            return os.readlink(self.path(rel))
        except FileNotFoundError:
            return ABSENT

    def put_link(self, rel: str, target: str | None, prune_below: str | None = None) -> Write:
        """Point a symlink at ``target`` (replacing what is there), or remove it with ``None``; under /etc."""
        self.confine(rel, CONFIG_AREAS, follow_last=False)
        if prune_below is not None:
            self.confine(prune_below, CONFIG_AREAS)
        record = Write(rel, self.read_link(rel), target)
        self.journal.append(record)
        if self.dry_run:
            return record
        path = self.path(rel)
        if os.path.lexists(path):
            path.unlink()
        if target is None:
            self._prune(rel, prune_below)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)
        return record
