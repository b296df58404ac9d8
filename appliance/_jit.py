"""The one place that holds numba's options (STYLE.md, house rule 4).

``kernel`` is the only jit decorator the package uses.  Every compiled function is cached on disk
(``cache=True``), releases the GIL, and uses numpy's error model (no Python exceptions for division).
Bounds checking follows ``NUMBA_BOUNDSCHECK`` so a test run can switch it on for every kernel at once.
"""
from __future__ import annotations

import numba

_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=None)


def kernel(fn=None, **extra):
    """``@kernel`` or ``@kernel(inline="always")``: numba.njit with the project's options."""
    options = {**_OPTIONS, **extra}
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)
