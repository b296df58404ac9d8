"""Input files: detection by content, and where a day file's framing was lost.

Every input is opened once, when it is detected, and read from that descriptor (``streams``): what detection
read is served again, so a pipe or a FIFO loses none of its head.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from appliance.errors import InputError
from appliance.itch.layout import MESSAGE_LENGTH
from appliance.pcap import LINKTYPE_ETHERNET, PCAP_FILE_HEADER, PCAP_LINKTYPE_OFFSET, PCAP_MAGIC_BYTES, \
    PCAPNG_MAGIC_BYTES
from appliance.replay.streams import Gunzip, RawInput, chunks, fill

__all__ = ["Damage", "Source", "chunks", "detect"]

GZIP_MAGIC = b"\x1f\x8b"
HEAD = 4096                          # bytes detection looks at
DAYFILE_PROBE = 8                    # records that must frame in a row to call a file a day file
MAX_REPORTED = 10                    # damaged regions of one input listed one by one in input_errors
_LENGTH = tuple(int(n) for n in MESSAGE_LENGTH)


@dataclass
class Source:
    path: str
    kind: str                        # "pcap", "pcapng" or "dayfile"
    compressed: bool
    size: int                        # bytes on disk (0: a pipe or FIFO, length unknown)
    big: bool = False                # pcap byte order
    nano: bool = False               # pcap timestamp resolution
    linktype: int = LINKTYPE_ETHERNET
    start: int = 0                   # first record offset (past the pcap file header)
    raw: RawInput | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        what = {"pcap": f"pcap ({'ns' if self.nano else 'µs'}, {'big' if self.big else 'little'}-endian)",
                "pcapng": "pcapng", "dayfile": "NASDAQ ITCH 5.0 day file"}[self.kind]
        return what + (", gzip" if self.compressed else "")

    def open_reader(self):
        """The input's bytes from the first (inflated when gzip), for the one pass that decodes them."""
        self.raw.rewind(keep=False)
        return Gunzip(self.raw) if self.compressed else self.raw

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


def _frames(head: bytes, q: int, whole: bool) -> bool:
    """From ``q``, a message record and then records up to ``DAYFILE_PROBE`` in all frame (length == the ITCH
    length of the type; zero-length padding stepped over); running out of a head that is the whole input is fine.
    The walker's test (decode/walk.py ``_frames_from``) made stricter: a longer run, no bad record in it."""
    framed = empty = 0
    while framed < DAYFILE_PROBE:
        if q + 3 > len(head):
            return whole and framed > 0
        length = int.from_bytes(head[q:q + 2], "big")
        if length == 0 and framed:
            empty += 1
            if empty > DAYFILE_PROBE:
                return False
            q += 2
            continue
        if length == 0 or _LENGTH[head[q + 2]] != length:
            return False
        if q + 2 + length > len(head):
            return whole
        framed += 1
        q += 2 + length
    return True


def _looks_like_dayfile(head: bytes, whole: bool) -> bool:
    """Records frame from some offset of the head.  Usually that is byte 0; a day file whose first length
    prefixes are damaged is still recognised, and the walker reports the damage from byte 0 to where records
    frame again, as it does anywhere else in the file."""
    return any(_frames(head, q, whole) for q in range(len(head) - 2))


def _classify(path: str, head: bytes, whole: bool, compressed: bool, size: int) -> Source:
    if head[:4] in PCAP_MAGIC_BYTES:
        if len(head) < PCAP_FILE_HEADER:
            raise InputError(f"{path}: pcap file header is cut short ({len(head)} bytes)")
        big, nano = PCAP_MAGIC_BYTES[head[:4]]
        linktype = struct.unpack_from(">I" if big else "<I", head, PCAP_LINKTYPE_OFFSET)[0] & 0xFFFF
        return Source(path, "pcap", compressed, size, big, nano, linktype, start=PCAP_FILE_HEADER)
    if head[:4] == PCAPNG_MAGIC_BYTES:
        return Source(path, "pcapng", compressed, size)
    if _looks_like_dayfile(head, whole):
        return Source(path, "dayfile", compressed, size)
    shown = head[:8].hex(" ") if head else "nothing"
    raise InputError(f"{path} is not a pcap, pcapng or NASDAQ ITCH 5.0 day file (it starts with {shown})")


def detect(path: str) -> Source:
    """Identify ``path`` by its first bytes (never its name); it stays open for ``chunks``."""
    raw = RawInput(path)
    try:
        src = _detect(path, raw)
    except BaseException:
        raw.close()
        raise
    src.raw = raw
    return src


def _detect(path: str, raw: RawInput) -> Source:
    head = _head(raw)
    if not head:
        raise InputError(f"input {path} is empty")
    if head[:2] != GZIP_MAGIC:
        return _classify(path, head, len(head) < HEAD, False, raw.size)
    raw.rewind()
    gz = Gunzip(raw)
    head = _head(gz)
    if not head:
        raise InputError(f"{path} looks like gzip but cannot be inflated: {gz.problem() or 'it inflates to nothing'}")
    return _classify(path, head, len(head) < HEAD, True, raw.size)


def _head(reader) -> bytes:
    data = bytearray(HEAD)
    return bytes(data[:fill(reader, memoryview(data), 0)])


class Damage:
    """Where a day file's framing was lost (a damaged length prefix) and where records framed again, for
    ``input_errors``: the first ``MAX_REPORTED`` regions of an input one by one, then how many more."""

    def __init__(self, src: Source):
        self.src = src
        self.lost_at: int | None = None
        self.regions: list[tuple[int, int, bool]] = []      # (first byte, first byte after, to the end)
        self.more = self.more_bytes = 0

    def lose(self, offset: int) -> None:
        self.lost_at = offset

    def found(self, offset: int, at_end: bool = False) -> None:
        if len(self.regions) < MAX_REPORTED:
            self.regions.append((self.lost_at, offset, at_end))
        else:
            self.more += 1
            self.more_bytes += offset - self.lost_at
        self.lost_at = None

    def errors(self) -> list[str]:
        where = " of the inflated stream" if self.src.compressed else ""
        out = []
        for first, after, at_end in self.regions:
            lost = f"{self.src.path}: day-file framing lost at byte {first:,}{where} (a damaged record length): "
            out.append(lost + (f"no record frames after it; its last {after - first:,} bytes were skipped" if at_end
                               else f"{after - first:,} bytes skipped, records frame again from byte {after:,}"))
        if self.more:
            out.append(f"{self.src.path}: and {self.more:,} more damaged regions ({self.more_bytes:,} bytes "
                       "skipped; see counters framing_lost and resync_skipped_bytes)")
        return out
