"""The output directory of one run, written whole or not at all.

A run writes into a staging directory beside ``DIR`` (``.DIR.partial-PID``: its name says it is incomplete)
and only a run that finished -- inputs decoded, every table and summary.json written and flushed -- is swapped
in as ``DIR``.  So a run that fails (a missing input, a full disk, a file-size limit, Ctrl-C) leaves the
previous run's ``DIR`` exactly as it was, and a run that succeeds replaces all of it: no table of an older run
(say a ``messages.csv`` this run did not ask for) is left beside the new ones.

``DIR`` is replaced only when it is empty or holds nothing but files a run writes; a directory with anything
else in it is refused, so a mistyped ``--out $HOME`` cannot delete anything.  The swap is one
``renameat2(RENAME_EXCHANGE)`` where the kernel offers it, so ``DIR`` never goes missing in between; the old
run is then deleted.  A staging directory left by a killed run (its process gone) is removed by the next run
into the same ``DIR``.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

from appliance.errors import RunFailed, UserError
from appliance.files import pid_alive

RUN_FILES = frozenset({"summary.json", "bbo.csv", "trades.csv", "broken.csv", "vwap.csv", "messages.csv", "packets.csv",
                       "workers.json"})
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class RunDir:
    """``with RunDir(out) as stage: ...write into stage...; commit()`` -- see the module docstring."""

    def __init__(self, out: str | os.PathLike):
        self.final = Path(out)
        self.stage = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"
        self.committed = False

    def open(self) -> Path:
        """Check ``DIR`` may be replaced and create the staging directory; returns it."""
        final = self.final
        if final.exists() and not final.is_dir():
            raise UserError(f"--out {final} is a file, not a directory")
        if final.is_dir():
            foreign = sorted(p.name for p in final.iterdir() if p.name not in RUN_FILES)
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise UserError(f"--out {final} holds files a replay does not write ({shown}); a run replaces its "
                                f"whole directory, so give an empty or new one")
        self._remove_stale()
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.stage.mkdir()
        except OSError as err:
            raise UserError(f"cannot write to output directory {final}: {err.strerror or err}") from None
        return self.stage

    def commit(self) -> None:
        """Swap the finished staging directory in as ``DIR`` (deleting the previous run's)."""
        final, stage = self.final, self.stage
        try:
            if final.is_dir() and _exchange(stage, final):
                shutil.rmtree(stage)            # now holds the previous run
            else:
                if final.is_dir():
                    old = final.parent / f".{final.name}.old-{os.getpid()}"
                    os.rename(final, old)
                    os.rename(stage, final)
                    shutil.rmtree(old)
                else:
                    os.rename(stage, final)
        except OSError as err:
            raise RunFailed(f"the run finished but could not be moved into {final}: {err.strerror or err} "
                            f"(its files are in {stage})") from None
        self.committed = True

    def discard(self) -> None:
        """Remove the staging directory of a run that did not finish; ``DIR`` is left as it was."""
        if not self.committed:
            shutil.rmtree(self.stage, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.discard()

    def _remove_stale(self) -> None:
        prefix = f".{self.final.name}.partial-"
        parent = self.final.parent
        if not parent.is_dir():
            return
        for entry in parent.iterdir():
            pid = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)



def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False where the kernel or libc lacks it."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
