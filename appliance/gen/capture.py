"""File formats: classic pcap, pcapng and the NASDAQ binary day file, each built as one buffer, written once.

The replay engine detects the format by content, so these follow the specifications to the byte:

* pcap: 24-byte global header (magic 0xa1b23c4d for nanosecond timestamps or 0xa1b2c3d4 for microseconds,
  in the file's byte order; version 2.4; snaplen 65535; linktype 1, Ethernet), then a 16-byte record header
  (seconds, fraction, captured length, wire length) before each frame.
* pcapng: Section Header Block (byte-order magic 0x1A2B3C4D), one Interface Description Block (linktype 1,
  snaplen 65535, ``if_tsresol``), then an Enhanced Packet Block per frame -- or, on request, Simple Packet
  Blocks, which carry no timestamp and no captured length (readers take min(wire length, snaplen)), so a
  frame cut short is written with its wire length equal to what was captured.
* day file: ``[u16 big-endian length][message]`` repeated, no session layer.

Record headers are filled by small kernels after the frames are written in place (``emit``), so no frame
is copied twice.  Padding is zero (the buffer starts zeroed; untouched pages cost nothing).
"""
from __future__ import annotations

import gzip as _gzip
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from appliance._jit import kernel
from appliance.decode import put
from appliance.errors import RunFailed, UserError
from appliance.files import written_whole

from appliance.pcap import IF_NAME, IF_TSRESOL, LINKTYPE_ETHERNET, NSEC_TCPDUMP_MAGIC as PCAP_MAGIC_NS, \
    OPT_ENDOFOPT, PCAP_RECORD_HEADER as PCAP_RECORD, PCAPNG_BLOCK_TAIL as BLOCK_TAIL, \
    PCAPNG_BYTE_ORDER_MAGIC as BYTE_ORDER_MAGIC, PCAPNG_EPB as EPB, PCAPNG_EPB_HEAD as EPB_HEAD, \
    PCAPNG_IDB as IDB, PCAPNG_SHB as SHB, PCAPNG_SPB as SPB, PCAPNG_SPB_HEAD as SPB_HEAD, SHB_USERAPPL, \
    TCPDUMP_MAGIC as PCAP_MAGIC_US

SNAPLEN = 65535
GZIP_LEVEL = 6
NS = 1_000_000_000

Emit = Callable[[np.ndarray, np.ndarray], None]     # emit(out, at): write frame f's bytes at out[at[f]:]


def pcap(ts_ns: np.ndarray, caplen: np.ndarray, origlen: np.ndarray, emit: Emit, *, nanosecond: bool = True,
         big_endian: bool = False) -> np.ndarray:
    end = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    head = struct.pack(end + "IHHiIII", magic, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
    record = np.concatenate(([len(head)], len(head) + np.cumsum(PCAP_RECORD + caplen)[:-1])).astype(np.int64)
    out = np.zeros(len(head) + int(np.sum(PCAP_RECORD + caplen)), np.uint8)
    out[:len(head)] = np.frombuffer(head, np.uint8)
    emit(out, record + PCAP_RECORD)
    fraction = ts_ns % NS if nanosecond else ts_ns % NS // 1000
    _pcap_records(out, record, ts_ns // NS, fraction, caplen, origlen, big_endian)
    return out


@kernel
def _pcap_records(out, at, seconds, fraction, caplen, origlen, big):
    for f in range(at.shape[0]):
        put.u32(out, at[f], seconds[f], big)
        put.u32(out, at[f] + 4, fraction[f], big)
        put.u32(out, at[f] + 8, caplen[f], big)
        put.u32(out, at[f] + 12, origlen[f], big)


def _option(end: str, code: int, value: bytes) -> bytes:
    return struct.pack(end + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(end: str, block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack(end + "II", block_type, total) + body + struct.pack(end + "I", total)


def pcapng_units(ts_ns: np.ndarray, tsresol: int) -> np.ndarray:
    """Timestamps in units of ``if_tsresol``: 10**-v s for v < 128, 2**-(v & 127) s with the high bit set."""
    seconds, nanos = ts_ns // NS, ts_ns % NS
    if tsresol & 0x80:
        shift = tsresol & 0x7F
        return (seconds << shift) + ((nanos << shift) // NS)
    return seconds * 10 ** tsresol + nanos // 10 ** (9 - tsresol)


def check_tsresol(tsresol: int) -> None:
    if not (0 <= tsresol <= 9 or 0x80 <= tsresol <= 0x80 + 32):
        raise UserError(f"pcapng_tsresol {tsresol!r} must be 0-9 (10**-n s) or 0x80-0xA0 (2**-n s, n <= 32)")


def pcapng(ts_ns: np.ndarray, caplen: np.ndarray, origlen: np.ndarray, emit: Emit, *, tsresol: int = 9,
           simple: bool = False, big_endian: bool = False) -> np.ndarray:
    check_tsresol(tsresol)
    end = ">" if big_endian else "<"
    shb = _block(end, SHB, struct.pack(end + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
                 + _option(end, SHB_USERAPPL, b"appliance generate") + _option(end, OPT_ENDOFOPT, b""))
    idb = _block(end, IDB, struct.pack(end + "HHI", LINKTYPE_ETHERNET, 0, SNAPLEN)
                 + _option(end, IF_NAME, b"feed") + _option(end, IF_TSRESOL, bytes([tsresol]))
                 + _option(end, OPT_ENDOFOPT, b""))
    head = shb + idb
    if simple:
        origlen = caplen          # an SPB cannot say "cut short": its wire length is what was captured
    padded = (caplen + 3) // 4 * 4
    size = (SPB_HEAD if simple else EPB_HEAD) + padded + BLOCK_TAIL
    block = np.concatenate(([len(head)], len(head) + np.cumsum(size)[:-1])).astype(np.int64)
    out = np.zeros(len(head) + int(size.sum()), np.uint8)
    out[:len(head)] = np.frombuffer(head, np.uint8)
    emit(out, block + (SPB_HEAD if simple else EPB_HEAD))
    if simple:
        _spb_blocks(out, block, size, origlen, big_endian)
    else:
        units = pcapng_units(ts_ns, tsresol)
        _epb_blocks(out, block, size, units >> 32, units & 0xFFFFFFFF, caplen, origlen, big_endian)
    return out


@kernel
def _epb_blocks(out, at, size, ts_high, ts_low, caplen, origlen, big):
    for f in range(at.shape[0]):
        p = at[f]
        put.u32(out, p, EPB, big)
        put.u32(out, p + 4, size[f], big)
        put.u32(out, p + 8, 0, big)                       # interface 0
        put.u32(out, p + 12, ts_high[f], big)
        put.u32(out, p + 16, ts_low[f], big)
        put.u32(out, p + 20, caplen[f], big)
        put.u32(out, p + 24, origlen[f], big)
        put.u32(out, p + size[f] - BLOCK_TAIL, size[f], big)


@kernel
def _spb_blocks(out, at, size, origlen, big):
    for f in range(at.shape[0]):
        p = at[f]
        put.u32(out, p, SPB, big)
        put.u32(out, p + 4, size[f], big)
        put.u32(out, p + 8, origlen[f], big)
        put.u32(out, p + size[f] - BLOCK_TAIL, size[f], big)


@kernel
def _day_records(out, buf, offsets):
    q = 0
    for m in range(offsets.shape[0] - 1):
        length = offsets[m + 1] - offsets[m]
        put.be16(out, q, length)
        put.copy(out, q + 2, buf, offsets[m], length)
        q += 2 + length
    return q


def dayfile(buf: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    n = len(offsets) - 1
    out = np.empty(2 * n + int(offsets[-1] - offsets[0]), np.uint8)
    _day_records(out, buf, offsets)
    return out


def write(path: Path, data: np.ndarray, gzip: bool) -> int:
    """Write the buffer in one go (gzip with mtime 0 and no name, so the bytes depend on the data alone).

    The bytes go to a hidden file beside ``path`` that is renamed over it only when complete, so a full disk or
    a file-size limit leaves neither a truncated feed nor the partial file (RunFailed names the reason)."""
    try:
        with written_whole(path) as raw:
            if gzip:
                with _gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as z:
                    z.write(memoryview(data))
            else:
                raw.write(memoryview(data))
    except OSError as err:
        raise RunFailed(f"writing {path} failed: {err.strerror or err}; nothing was written") from None
    return path.stat().st_size
