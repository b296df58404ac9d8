"""Counter-based random numbers (SplitMix64), one definition for the kernels and for the set-up code.

Why not numpy's or numba's generators: the bytes of a feed must depend on the seed alone.  numpy does not
promise ``Generator`` streams stable across releases, and numba's ``np.random`` is a separate implementation.
SplitMix64's i-th output is a pure function of (key, i), so the Python side draws whole arrays at once
(``Stream``) and a kernel draws one value at a time (``next_u64``) from the same few lines of arithmetic.

Every sub-stream gets its own key (``stream_key(seed, name)``), so adding draws to one part of the generator
never shifts the numbers another part sees.
"""
from __future__ import annotations

import zlib

import numpy as np

from appliance._jit import kernel

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0        # 2**-53: the top 53 bits of a draw become a double in [0, 1)


@kernel(inline="always")
def mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@kernel(inline="always")
def next_u64(key, state, slot):
    """The next draw of the stream whose counter lives in ``state[slot]`` (an int64 array)."""
    state[slot] += 1
    return mix64(key + np.uint64(state[slot]) * GOLDEN)


@kernel(inline="always")
def next_unit(key, state, slot):
    """Uniform double in [0, 1)."""
    return np.float64(next_u64(key, state, slot) >> _S11) * _TO_UNIT


@kernel(inline="always")
def next_below(key, state, slot, n):
    """Uniform integer in [0, n) for 0 < n < 2**53."""
    return np.int64(next_unit(key, state, slot) * n)


@kernel(inline="always")
def next_exponential(key, state, slot, mean):
    """Exponential with the given mean (``1 - u`` keeps the log finite)."""
    return -np.log(1.0 - next_unit(key, state, slot)) * mean


def _mix64_array(z: np.ndarray) -> np.ndarray:
    """The vector twin of ``mix64`` (numpy arrays wrap on overflow, silently, as the kernel does)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def stream_key(seed: int, name: str) -> np.uint64:
    """Key of the named sub-stream of ``seed``."""
    base = np.array([(seed & 0xFFFFFFFFFFFFFFFF) ^ (zlib.crc32(name.encode()) << 32)], dtype=np.uint64)
    return _mix64_array(base)[0]


class Stream:
    """Vectorised draws from one named sub-stream; ``counter`` continues where the last call stopped."""

    def __init__(self, seed: int, name: str):
        self.key = stream_key(seed, name)
        self.counter = 0

    def u64(self, n: int) -> np.ndarray:
        counters = np.arange(self.counter + 1, self.counter + n + 1, dtype=np.uint64)
        self.counter += n
        return _mix64_array(self.key + counters * GOLDEN)

    def unit(self, n: int) -> np.ndarray:
        return (self.u64(n) >> _S11).astype(np.float64) * _TO_UNIT

    def below(self, n: int, bound) -> np.ndarray:
        """Integers in [0, bound) (``bound`` a scalar or an array of n bounds)."""
        return (self.unit(n) * np.asarray(bound, dtype=np.float64)).astype(np.int64)

    def permutation(self, n: int) -> np.ndarray:
        """A permutation of range(n): order by independent draws (ties are impossible in practice)."""
        return np.argsort(self.u64(n), kind="stable")

    def choose(self, n: int, k: int) -> np.ndarray:
        """k distinct indices of range(n), sorted."""
        return np.sort(self.permutation(n)[:k])
