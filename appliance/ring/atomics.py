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

Only ``appliance.ring`` modules use these, and there only in the ownership functions that name the ring.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from appliance._jit import kernel

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1

_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.voidptr))


def _word_pointer(context, builder, aryty, ary_value, index):
    ary = context.make_array(aryty)(context, builder, ary_value)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [index], wraparound=False, boundscheck=False)


@intrinsic
def load_acquire_u32(typingctx, words, index):
    """``words[index]`` (a uint32 array over shared memory) loaded with acquire ordering; not bounds-checked:
    callers index with offsets the kernel gave at setup."""
    if not isinstance(words, types.Array) or words.dtype != types.uint32 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ptr = _word_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 4)

    return types.uint32(words, index), codegen


@intrinsic
def store_release_u32(typingctx, words, index, value):
    """``words[index] = value`` with release ordering (a uint32 array over shared memory)."""
    if not isinstance(words, types.Array) or words.dtype != types.uint32 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ptr = _word_pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.uint32)
        builder.store_atomic(val, ptr, "release", 4)
        return context.get_dummy_value()

    return types.void(words, index, value), codegen


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
