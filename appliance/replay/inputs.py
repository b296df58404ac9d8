"""Input files: detection by content, memory mapping, and gzip streaming.

A plain file is memory-mapped and handed to the kernels whole: they decode it in place.  A gzip file is
inflated in chunks; the bytes of a record cut by a chunk boundary are carried into the next chunk, so a
compressed day of any size decodes in bounded memory.
"""
from __future__ import annotations

import gzip
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from appliance.errors import InputError
from appliance.itch.layout import MESSAGE_LENGTH

PCAP_MAGICS = {                      # first four bytes -> (big-endian, nanosecond)
    b"\xd4\xc3\xb2\xa1": (False, False), b"\xa1\xb2\xc3\xd4": (True, False),
    b"\x4d\x3c\xb2\xa1": (False, True), b"\xa1\xb2\x3c\x4d": (True, True),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
GZIP_CHUNK = 64 << 20
DAYFILE_PROBE = 8                    # records that must frame correctly to call a file a day file


@dataclass
class Source:
    path: str
    kind: str                        # "pcap", "pcapng" or "dayfile"
    compressed: bool
    size: int                        # bytes on disk
    big: bool = False                # pcap byte order
    nano: bool = False               # pcap timestamp resolution
    linktype: int = 1
    start: int = 0                   # first record offset (past the pcap file header)

    def describe(self) -> str:
        what = {"pcap": f"pcap ({'ns' if self.nano else 'µs'}, {'big' if self.big else 'little'}-endian)",
                "pcapng": "pcapng", "dayfile": "NASDAQ ITCH 5.0 day file"}[self.kind]
        return what + (", gzip" if self.compressed else "")


def _looks_like_dayfile(head: bytes) -> bool:
    """Most of the first records frame as ITCH 5.0 messages of their type's length (a damaged record or two
    at the start does not hide a day file; the walker counts them as bad messages)."""
    pos = good = bad = 0
    while good + bad < DAYFILE_PROBE and pos + 2 <= len(head):
        length = int.from_bytes(head[pos:pos + 2], "big")
        if pos + 2 < len(head) and length and MESSAGE_LENGTH[head[pos + 2]] == length:
            good += 1
        else:
            bad += 1
        pos += 2 + length
    return good > 0 and good >= 3 * bad


def _classify(path: str, head: bytes, compressed: bool, size: int) -> Source:
    if head[:4] in PCAP_MAGICS:
        if len(head) < 24:
            raise InputError(f"{path}: pcap file header is cut short ({len(head)} bytes)")
        big, nano = PCAP_MAGICS[head[:4]]
        linktype = struct.unpack(">I" if big else "<I", head[20:24])[0] & 0xFFFF
        return Source(path, "pcap", compressed, size, big, nano, linktype, start=24)
    if head[:4] == PCAPNG_MAGIC:
        return Source(path, "pcapng", compressed, size)
    if _looks_like_dayfile(head):
        return Source(path, "dayfile", compressed, size)
    shown = head[:8].hex(" ") if head else "nothing"
    raise InputError(f"{path} is not a pcap, pcapng or NASDAQ ITCH 5.0 day file (it starts with {shown})")


def detect(path: str) -> Source:
    """Identify ``path`` by its first bytes (never its name)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        raise InputError(f"input {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"input {path} is a directory, not a capture or day file") from None
    except PermissionError:
        raise InputError(f"input {path} is not readable (permission denied)") from None
    if not head:
        raise InputError(f"input {path} is empty")
    if head[:2] == GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(4096)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{path} looks like gzip but cannot be inflated: {err}") from None
        if not head:
            raise InputError(f"input {path} inflates to nothing")
        return _classify(path, head, True, size)
    return _classify(path, head, False, size)


def chunks(src: Source) -> Iterator[tuple[np.ndarray, int, bool]]:
    """Yield (buffer, offset of the first unprocessed byte, final); send back the offset the kernel reached.

    The driver calls ``gen.send(reached)`` after each chunk so the unconsumed tail is carried forward.
    """
    if not src.compressed:
        if src.size == 0:
            return
        with open(src.path, "rb") as fh:
            # The mapping stays open while the driver holds views of it and is unmapped when the last goes.
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        # The kernels read it front to back once: ask for aggressive read-ahead and early page reuse.
        for advice in ("MADV_SEQUENTIAL", "MADV_WILLNEED"):
            if hasattr(mmap, advice):
                try:
                    mapped.madvise(getattr(mmap, advice))
                except OSError:
                    pass
        yield np.frombuffer(mapped, dtype=np.uint8), src.start, True
        return
    tail = b""
    skip = src.start
    for data, final in _inflate(src.path):
        joined = tail + data
        reached = yield np.frombuffer(joined, dtype=np.uint8), skip, final
        skip = 0
        tail = joined[reached:] if reached is not None else b""


def _inflate(path: str) -> Iterator[tuple[bytes, bool]]:
    """Inflate a gzip file (any number of members) in chunks; a cut or damaged stream yields what inflated
    cleanly and then raises InputError, so everything before the damage is decoded."""
    decomp = zlib.decompressobj(wbits=31)
    pending = bytearray()
    with open(path, "rb") as fh:
        while True:
            raw = fh.read(1 << 20)
            try:
                while raw:
                    pending += decomp.decompress(raw)
                    raw = b""
                    if decomp.eof and decomp.unused_data:      # the next gzip member starts here
                        raw = decomp.unused_data
                        decomp = zlib.decompressobj(wbits=31)
            except zlib.error as err:
                yield bytes(pending), True
                raise InputError(f"{path}: gzip stream is damaged ({err}); decoded what came before it") from None
            at_end = not fh.peek(1) if hasattr(fh, "peek") else False
            if at_end:
                pending += decomp.flush()
                yield bytes(pending), True
                if not decomp.eof:
                    raise InputError(f"{path}: gzip stream ends early (file cut short); decoded what it held")
                return
            if len(pending) >= GZIP_CHUNK:
                yield bytes(pending), False
                pending.clear()
