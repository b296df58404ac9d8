"""A software prefetch for the kernels: ``prefetch(array, index)`` asks the CPU to start loading the cache line
holding ``array[index]`` without waiting for it (LLVM's ``llvm.prefetch``; a no-op where unsupported).

Replay is bound by memory latency: each message touches its order's slot and its book side's top levels at
addresses no cache predicts.  The walkers know the next messages' references and stock locates before they
apply them, so they start those loads a few messages early.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_I32 = ir.IntType(32)


@intrinsic
def prefetch(typingctx, array, index):
    """Prefetch ``array[index]`` for reading into all cache levels; ``index`` is not bounds-checked (a prefetch
    of any address is harmless)."""
    if not isinstance(array, types.Array) or array.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False,
                                       boundscheck=False)
        raw = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [raw.type, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [raw, _I32(0), _I32(3), _I32(1)])       # read, keep in all levels, data cache
        return context.get_dummy_value()

    return types.void(array, index), codegen
