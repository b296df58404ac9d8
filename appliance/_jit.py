"""The one place that holds numba's options (STYLE.md, house rule 4).

``kernel`` is the only jit decorator the package uses.  Every compiled function is cached on disk
(``cache=True``), releases the GIL, and uses numpy's error model (no Python exceptions for division).
Bounds checking follows ``NUMBA_BOUNDSCHECK`` so a test run can switch it on for every kernel at once.

Kernels are compiled without numba's runtime (``_nrt=False``).  With it, every array taken out of a state tuple
or handed to a helper is reference-counted with an atomic increment and decrement: measured here, that made
the replay kernel 3.7x slower (2.9 vs 10.9 M messages/s).  Without it, an allocation inside a kernel is a
compile error -- which is the house rule anyway: buffers are allocated by the caller, up front.

Cache location: numba keys a cached kernel on its own source file only, so after an edit to a function it
calls (another module) it would load stale machine code.  The cache therefore lives in a directory named by a
hash of every source file that kernels are made of (``KERNEL_SOURCES``: kernels, and the modules whose
constants they freeze into machine code, live nowhere else); any change there compiles afresh.
``NUMBA_CACHE_DIR``, when set, wins.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numba

_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=None, _nrt=False)
_PACKAGE = Path(__file__).resolve().parent
_KEEP = 3                    # cache directories of other source versions kept (e.g. switching branches)
KERNEL_SOURCES = ("_jit.py", "decode", "itch", "gen", "pcap.py", "replay/csvfmt.py", "cold/rows.py",
                  "publish/records.py", "publish/wire.py", "ring/atomics.py", "ring/deliver.py", "ring/tpacket_rx.py",
                  "ring/tpacket2_rx.py", "ring/xsk_rx.py")


def _source_hash() -> str:
    digest = hashlib.sha256(numba.__version__.encode())
    files = []
    for entry in KERNEL_SOURCES:
        path = _PACKAGE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for path in files:
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _configure_cache() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    digest = _source_hash()
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path(os.path.expanduser("~")) / ".cache")
    # An unwritable home (a service user, nobody) falls back to the temporary directory: numba refuses to
    # compile a cached kernel at all when it finds nowhere to write the cache.
    for base in (home / "appliance-numba", Path(tempfile.gettempdir()) / f"appliance-numba-{os.getuid()}"):
        here = base / digest
        try:
            here.mkdir(parents=True, exist_ok=True)
            if not os.access(here, os.W_OK | os.X_OK):
                continue
            others = sorted((p for p in base.iterdir() if p.is_dir() and p != here),
                            key=lambda p: p.stat().st_mtime)
            for old in others[:-_KEEP] if len(others) > _KEEP else []:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue
        numba.config.CACHE_DIR = str(here)
        return


_configure_cache()


def cache_is_cold() -> bool:
    """True when no compiled kernel is cached yet: the next run compiles them (about a minute, once)."""
    root = Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else _PACKAGE
    return not any(root.rglob("*.nbi"))


def kernel(fn=None, **extra):
    """``@kernel`` or ``@kernel(inline="always")``: numba.njit with the project's options."""
    options = {**_OPTIONS, **extra}
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)
