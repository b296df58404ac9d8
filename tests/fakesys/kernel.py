"""Kernel behaviour the fake tree needs, put where the real kernel has it: in the attribute write.

:class:`FakeKernelFS` is a :class:`HostFS` whose low-level attribute write behaves like the kernel's for
the files that do not simply store what is written, and can be told to fail:

- selection files (THP ``enabled``/``defrag``) accept one listed word and then show it in brackets;
- ``nr_hugepages`` keeps at most ``hugepage_limit[path]`` pages (memory fragmentation);
- ``smp_affinity_list`` refuses offline CPUs (EINVAL) and IRQs listed in ``managed_irqs`` (EIO);
- ``fail[path]`` is raised as the given ``OSError`` on the next write to ``path``.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from provisioning.hostfs import HostFS
from provisioning.topology import parse_cpulist

_SELECT = re.compile(r"\[[^\]]+\]")


class FakeKernelFS(HostFS):
    def __init__(self, root, dry_run: bool = False, cpus: int = 8):
        super().__init__(root, dry_run)
        self.cpus = cpus
        self.fail: dict[str, OSError] = {}
        self.hugepage_limit: dict[str, int] = {}
        self.managed_irqs: set[int] = set()
        self.writes = 0

    def _rel(self, path: Path) -> str:
        return "/" + str(Path(path).relative_to(self.root))

    def _write_attr(self, path: Path, value: str) -> None:
        rel = self._rel(path)
        if rel in self.fail:
            raise self.fail.pop(rel)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        if not os.stat(path).st_mode & 0o222:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        current = Path(path).read_text().rstrip("\n")
        self.writes += 1
        if _SELECT.search(current):
            words = _SELECT.sub(lambda m: m.group(0)[1:-1], current).split()
            if value not in words:
                raise OSError(errno.EINVAL, "Invalid argument", str(path))
            value = " ".join(f"[{w}]" if w == value else w for w in words)
        elif rel.endswith("/nr_hugepages"):
            value = str(min(int(value), self.hugepage_limit.get(rel, 1 << 30)))
        elif rel.endswith("/smp_affinity_list"):
            irq = int(rel.split("/")[3])
            if irq in self.managed_irqs:
                raise OSError(errno.EIO, "Input/output error", str(path))
            cpus = parse_cpulist(value)
            if not cpus or max(cpus) >= self.cpus:
                raise OSError(errno.EINVAL, "Invalid argument", str(path))
        super()._write_attr(path, value + "\n")
