"""Files written whole or not at all, and whether the process that owns a file still lives.

A table, a summary or a generated feed that a full disk or a file-size limit cut short must not be mistaken for
a complete one: ``written_whole`` writes beside the target and renames over it only once everything is on
disk, removing the partial file on any failure.  Staging directories and hand-shake files name their owner by
pid so a later run can tell a killed run's leftovers (``pid_alive``) from a live one's.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def written_whole(path: Path, mode: str = "wb") -> Iterator:
    """``with written_whole(path) as fh: fh.write(...)``: ``path`` appears only complete (an OSError leaves
    neither it changed nor a partial file, and is raised for the caller to word)."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, mode) as fh:
            yield fh
        os.replace(partial, path)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
