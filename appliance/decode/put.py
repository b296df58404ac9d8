"""Integer stores into a uint8 buffer, for the kernels: the writing twins of ``appliance.decode.wire``.

Callers size the buffer before calling; these only scatter bytes.  Values arrive as int64 (or uint64 for
full 64-bit fields) and each byte is masked explicitly, so no store depends on numba's integer promotion.
"""
import numpy as np

from appliance._jit import kernel


@kernel(inline="always")
def be16(buf, p, v):
    buf[p] = (v >> 8) & 0xFF
    buf[p + 1] = v & 0xFF


@kernel(inline="always")
def be32(buf, p, v):
    buf[p] = (v >> 24) & 0xFF
    buf[p + 1] = (v >> 16) & 0xFF
    buf[p + 2] = (v >> 8) & 0xFF
    buf[p + 3] = v & 0xFF


@kernel(inline="always")
def be48(buf, p, v):
    be16(buf, p, v >> 32)
    be32(buf, p + 2, v & 0xFFFFFFFF)


@kernel(inline="always")
def be64(buf, p, v):
    be32(buf, p, (v >> 32) & 0xFFFFFFFF)
    be32(buf, p + 4, v & 0xFFFFFFFF)


@kernel(inline="always")
def le16(buf, p, v):
    buf[p] = v & 0xFF
    buf[p + 1] = (v >> 8) & 0xFF


@kernel(inline="always")
def le32(buf, p, v):
    buf[p] = v & 0xFF
    buf[p + 1] = (v >> 8) & 0xFF
    buf[p + 2] = (v >> 16) & 0xFF
    buf[p + 3] = (v >> 24) & 0xFF


@kernel(inline="always")
def u16(buf, p, v, big):
    """16-bit store in the byte order of the file being written (pcap and pcapng may be either)."""
    if big:
        be16(buf, p, v)
    else:
        le16(buf, p, v)


@kernel(inline="always")
def u32(buf, p, v, big):
    if big:
        be32(buf, p, v)
    else:
        le32(buf, p, v)


@kernel(inline="always")
def copy(dst, d, src, s, n):
    for i in range(n):
        dst[d + i] = src[s + i]


@kernel(inline="always")
def ipv4_checksum(buf, p, n):
    """RFC 1071 one's-complement sum over the ``n``-byte IPv4 header at ``p`` (checksum field zeroed first)."""
    total = np.int64(0)
    for i in range(0, n, 2):
        total += (np.int64(buf[p + i]) << 8) | np.int64(buf[p + i + 1])
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
