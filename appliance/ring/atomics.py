"""The few machine operations the ring kernels need that numpy indexing cannot express.

* ``load_acquire_u32`` / ``store_release_u32``: every word the kernel and we hand back and forth (an AF_XDP
  ring's producer and consumer index, a TPACKET_V3 block's status) is read with acquire and written with
  release ordering.  A plain numpy load of a kernel-written index inside a loop is hoisted out of the loop by
  LLVM and never sees the kernel's update (measured here, see shared/notes/platform-facts.md); the acquire
  load also keeps the reads of the descriptors or frames it guards from moving above it, and the release
  store keeps our last reads of a slot from moving below the store that gives the slot back.  On x86-64 both
  compile to plain moves: the fence that matters is the compiler's.
* ``clock_ns``: ``clock_gettime`` through libc (vDSO), for receive-to-book latency.
* ``data_address``: the address of an array's first byte, for the system calls above.
* ``idle_wait``: what a ring kernel does when its ring is empty (poll, nap or spin; see below).

Only ``appliance.ring`` modules use these, and there only in the ownership functions that name the ring.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from appliance._jit import kernel

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1

_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.voidptr))
_poll = types.ExternalFunction("poll", types.int32(types.voidptr, types.uint64, types.int32))
_usleep = types.ExternalFunction("usleep", types.int32(types.uint32))

# How a ring kernel waits when its ring is empty (wait[W_MODE]):
IDLE_POLL = 0     # block in poll() on every ring's descriptor: no CPU while idle; a wakeup per batch the kernel signals
IDLE_NAP = 1      # sleep wait[W_NAP_US] first so frames pile up, then poll(): fewer wakeups, adds up to that latency
IDLE_SPIN = 2     # re-read the ring until the deadline: a whole core, the lowest latency
W_MODE, W_NAP_US, W_DEADLINE, W_NFDS, W_NAPPED, W_ERROR, W_STOP = range(7)
W_SIZE = 8
POLL_SLICE_MS = 20  # longest single poll() while waiting, so a stop request (W_STOP) is seen within it
POLLIN = 1
POLL_FAILED = 0x8 | 0x10 | 0x20     # POLLERR | POLLHUP | POLLNVAL: the socket needs the driver's attention


def _word_pointer(context, builder, aryty, ary_value, index):
    ary = context.make_array(aryty)(context, builder, ary_value)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [index], wraparound=False, boundscheck=False)


def _load_acquire(dtype, width: int, doc: str):
    """An intrinsic ``load(words, index)``: ``words[index]`` (a ``dtype`` array) loaded with acquire ordering;
    not bounds-checked: callers index with offsets fixed at setup."""
    def load(typingctx, words, index):
        if not isinstance(words, types.Array) or words.dtype != dtype or not isinstance(index, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            ptr = _word_pointer(context, builder, signature.args[0], args[0], args[1])
            return builder.load_atomic(ptr, "acquire", width)

        return dtype(words, index), codegen

    load.__doc__ = doc
    return intrinsic(load)


def _store_release(dtype, width: int, doc: str):
    """An intrinsic ``store(words, index, value)``: ``words[index] = value`` (a ``dtype`` array) with release
    ordering."""
    def store(typingctx, words, index, value):
        if not isinstance(words, types.Array) or words.dtype != dtype or not isinstance(index, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            ptr = _word_pointer(context, builder, signature.args[0], args[0], args[1])
            val = context.cast(builder, args[2], signature.args[2], dtype)
            builder.store_atomic(val, ptr, "release", width)
            return context.get_dummy_value()

        return types.void(words, index, value), codegen

    store.__doc__ = doc
    return intrinsic(store)


load_acquire_u32 = _load_acquire(types.uint32, 4, "A word the kernel shares with us (a ring index, a block status).")
store_release_u32 = _store_release(types.uint32, 4, "Hand a word back to the kernel (a ring index, a block status).")
load_acquire_i64 = _load_acquire(types.int64, 8, "A sequence number published with ``store_release_i64``, or a "
                                                 "control word (stop) another thread sets.")
store_release_i64 = _store_release(types.int64, 8, "Publish a sequence number: every write before it (the rows it "
                                                   "covers) is visible before the new value is.")


@intrinsic
def data_address(typingctx, array):
    """The address of ``array``'s first element as a ``void *``."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.bitcast(ary.data, ir.IntType(8).as_pointer())

    return types.voidptr(array), codegen


@kernel(inline="always")
def clock_ns(clock_id, timespec):
    """Nanoseconds on ``clock_id``; ``timespec`` is a caller-owned int64[2] scratch (no allocation here)."""
    _clock_gettime(clock_id, data_address(timespec))
    return timespec[0] * 1_000_000_000 + timespec[1]


@kernel(inline="always")
def stop_requested(wait):
    """Another thread asked the ring kernel to return (``wait[W_STOP]``, set by the capture's control thread)."""
    return load_acquire_i64(wait, W_STOP) != 0


@kernel(inline="always")
def due(wait, ts):
    """Time for a busy ring kernel to return: a stop was requested or its deadline passed."""
    return stop_requested(wait) or clock_ns(CLOCK_MONOTONIC, ts) >= wait[W_DEADLINE]


@kernel(inline="always")
def idle_wait(wait, pollfds, ts):
    """Every ring was found empty: wait as ``wait[W_MODE]`` says.  True: look at the rings again.  False: return
    to the driver -- the deadline (``W_DEADLINE``, CLOCK_MONOTONIC ns) passed, a stop was requested
    (``W_STOP``; seen within ``POLL_SLICE_MS``) or a signal arrived.  ``pollfds``
    holds the rings' ``struct pollfd {int fd; short events, revents;}`` as two int32 each.  poll() on an AF_XDP
    socket is also the wakeup the kernel asks for with need_wakeup.  A socket in error (POLLERR, POLLHUP,
    POLLNVAL) is reported in ``wait[W_ERROR]`` rather than waited on again: poll() would return at once, forever.
    """
    now = clock_ns(CLOCK_MONOTONIC, ts)
    if now >= wait[W_DEADLINE] or stop_requested(wait):
        return False
    mode = wait[W_MODE]
    if mode == IDLE_SPIN:
        return True
    if mode == IDLE_NAP and wait[W_NAPPED] == 0:
        wait[W_NAPPED] = 1
        _usleep(wait[W_NAP_US])
        return True
    ms = min((wait[W_DEADLINE] - now + 999_999) // 1_000_000, POLL_SLICE_MS)
    n = wait[W_NFDS]
    for i in range(n):
        pollfds[2 * i + 1] = POLLIN
    got = _poll(data_address(pollfds), n, ms)
    if got == 0:
        return True                           # a slice passed: look again (the caller re-checks stop and deadline)
    if got < 0:
        return False                          # a signal (EINTR)
    for i in range(n):
        revents = (pollfds[2 * i + 1] >> 16) & 0xFFFF
        if revents & POLL_FAILED:
            wait[W_ERROR] = revents           # e.g. the interface went down or away: the driver looks at it
            return False
    return True


@kernel(inline="always")
def kick(pollfds, own):
    """A zero-timeout poll() on this ring's socket: the wakeup an AF_XDP driver asks for with need_wakeup."""
    pollfds[2 * own + 1] = POLLIN
    _poll(data_address(pollfds[2 * own:2 * own + 2]), 1, 0)


def poll_set(fds: list[int]) -> np.ndarray:
    """``struct pollfd`` array for ``idle_wait``: fd, then events | revents << 16, as int32 pairs."""
    pollfds = np.zeros(2 * len(fds), np.int32)
    pollfds[0::2] = fds
    pollfds[1::2] = POLLIN
    return pollfds


def no_wait(fds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(wait, pollfds) that make a ring kernel return as soon as its rings are empty."""
    wait = np.zeros(W_SIZE, np.int64)
    wait[W_NFDS] = len(fds)
    return wait, poll_set(fds)
