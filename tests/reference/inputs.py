"""Input files, recognised by their content: classic pcap, pcapng, NASDAQ day file, and gzip of any of them.

A capture yields ``Record``s (one link-layer frame each); a day file is handed back whole, because its
framing (``[u16 BE length][message]``) is parsed by the replay itself.  Capture timestamps reach no output
of the contract (every output time is an ITCH timestamp), so they are not read; ``if_tsresol`` is therefore
irrelevant here.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
PCAP_MAGIC_ORDER = {                      # first four file bytes -> struct byte order of the file
    b"\xd4\xc3\xb2\xa1": "<",             # microseconds, little-endian writer
    b"\xa1\xb2\xc3\xd4": ">",             # microseconds, big-endian writer
    b"\x4d\x3c\xb2\xa1": "<",             # nanoseconds, little-endian writer
    b"\xa1\xb2\x3c\x4d": ">",             # nanoseconds, big-endian writer
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"          # a palindrome: reads the same in either byte order
PCAPNG_BYTE_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
PCAPNG_IDB, PCAPNG_SPB, PCAPNG_EPB = 1, 3, 6


@dataclass(frozen=True)
class Record:
    """One captured frame: its link type, the captured bytes, and the length it had on the wire."""
    linktype: int
    data: bytes
    wire_length: int


def load(path) -> tuple[str, object]:
    """("capture", list of Record) or ("dayfile", bytes) for one input file."""
    raw = Path(path).read_bytes()
    if raw[:2] == GZIP_MAGIC:
        raw = gzip.decompress(raw)
    if raw[:4] in PCAP_MAGIC_ORDER:
        return "capture", list(pcap_records(raw))
    if raw[:4] == PCAPNG_SHB:
        return "capture", list(pcapng_records(raw))
    return "dayfile", raw


def pcap_records(raw: bytes):
    order = PCAP_MAGIC_ORDER[raw[:4]]
    if len(raw) < 24:
        return
    (network,) = struct.unpack_from(order + "I", raw, 20)
    linktype = network & 0xFFFF           # the upper bits carry FCS information, not the link type
    pos = 24
    while pos + 16 <= len(raw):
        _sec, _frac, captured, original = struct.unpack_from(order + "IIII", raw, pos)
        pos += 16
        if pos + captured > len(raw):     # the file ends inside this record
            return
        yield Record(linktype, raw[pos:pos + captured], original)
        pos += captured


def pcapng_records(raw: bytes):
    order = "<"
    linktypes: list[int] = []             # interface id -> link type, for the current section
    snaplens: list[int] = []              # interface id -> snap length (0: none)
    pos = 0
    while pos + 12 <= len(raw):
        if raw[pos:pos + 4] == PCAPNG_SHB:
            order = PCAPNG_BYTE_ORDER.get(raw[pos + 8:pos + 12])
            if order is None:
                return
            linktypes, snaplens = [], []
        block_type, block_length = struct.unpack_from(order + "II", raw, pos)
        if block_length < 12 or pos + block_length > len(raw):
            return
        body = raw[pos + 8:pos + block_length - 4]
        pos += block_length
        if block_type == PCAPNG_IDB and len(body) >= 8:
            linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body, 0)
            linktypes.append(linktype)
            snaplens.append(snaplen)
        elif block_type == PCAPNG_EPB and len(body) >= 20:
            interface, _hi, _lo, captured, original = struct.unpack_from(order + "IIIII", body, 0)
            if interface < len(linktypes) and 20 + captured <= len(body):
                yield Record(linktypes[interface], body[20:20 + captured], original)
        elif block_type == PCAPNG_SPB and len(body) >= 4 and linktypes:
            (original,) = struct.unpack_from(order + "I", body, 0)
            captured = min(original, len(body) - 4)      # the rest of the body is padding
            if snaplens[0]:
                captured = min(captured, snaplens[0])
            yield Record(linktypes[0], body[4:4 + captured], original)
