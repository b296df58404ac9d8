"""Big- and little-endian integer loads from a uint8 buffer, for the kernels.

Callers check bounds before calling; these only assemble bytes.  Every value is built in uint64 (or int64)
explicitly: mixing numba's signed and unsigned integers silently promotes to float64.
"""
import numpy as np

from appliance._jit import kernel

_8 = np.uint64(8)


@kernel(inline="always")
def be16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@kernel(inline="always")
def be32(buf, p):
    return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
            | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))


@kernel(inline="always")
def be48(buf, p):
    return (be16(buf, p) << 32) | be32(buf, p + 2)


@kernel(inline="always")
def be64u(buf, p):
    v = np.uint64(0)
    for i in range(8):
        v = (v << _8) | np.uint64(buf[p + i])
    return v


@kernel(inline="always")
def le16(buf, p):
    return np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8)


@kernel(inline="always")
def le32(buf, p):
    return (np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8)
            | (np.int64(buf[p + 2]) << 16) | (np.int64(buf[p + 3]) << 24))


@kernel(inline="always")
def rd16(buf, p, big):
    return be16(buf, p) if big else le16(buf, p)


@kernel(inline="always")
def rd32(buf, p, big):
    return be32(buf, p) if big else le32(buf, p)
