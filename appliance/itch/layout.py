"""NASDAQ TotalView-ITCH 5.0 message layouts: the one table.

Every other view of the protocol is derived from ``MESSAGES`` below:

* ``MESSAGE_LENGTH`` -- a 256-entry numpy table (type byte -> length, 0 for an unknown type) that the numba
  kernels use to validate framing;
* ``offset(type, field)`` -- the byte offsets the numba kernels read, bound as module constants in
  ``appliance.decode.offsets``;
* ``decode(message)`` -- the slow, obvious decoder (a dict per message) used by ``--messages`` and the tests.

Field names are spelled as in the specification (Nasdaq TotalView-ITCH 5.0, sections 1.1 to 1.9).
All integers are big-endian. Kinds: ``int`` unsigned integer, ``alpha`` left-justified space-padded ASCII,
``price4`` u32 with 4 implied decimals, ``price8`` u64 with 8 implied decimals, ``timestamp`` 6-byte
nanoseconds since midnight.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    kind: str


_HEADER = (("Message Type", 1, "alpha"), ("Stock Locate", 2, "int"), ("Tracking Number", 2, "int"),
           ("Timestamp", 6, "timestamp"))

# (type, name, body fields after the 11-byte common header as (name, size, kind))
_TABLE = (
    ("S", "System Event", (("Event Code", 1, "alpha"),)),
    ("R", "Stock Directory", (
        ("Stock", 8, "alpha"), ("Market Category", 1, "alpha"), ("Financial Status Indicator", 1, "alpha"),
        ("Round Lot Size", 4, "int"), ("Round Lots Only", 1, "alpha"), ("Issue Classification", 1, "alpha"),
        ("Issue Sub-Type", 2, "alpha"), ("Authenticity", 1, "alpha"),
        ("Short Sale Threshold Indicator", 1, "alpha"), ("IPO Flag", 1, "alpha"),
        ("LULD Reference Price Tier", 1, "alpha"), ("ETP Flag", 1, "alpha"), ("ETP Leverage Factor", 4, "int"),
        ("Inverse Indicator", 1, "alpha"))),
    ("H", "Stock Trading Action", (
        ("Stock", 8, "alpha"), ("Trading State", 1, "alpha"), ("Reserved", 1, "alpha"), ("Reason", 4, "alpha"))),
    ("Y", "Reg SHO Short Sale Price Test Restricted Indicator", (
        ("Stock", 8, "alpha"), ("Reg SHO Action", 1, "alpha"))),
    ("L", "Market Participant Position", (
        ("MPID", 4, "alpha"), ("Stock", 8, "alpha"), ("Primary Market Maker", 1, "alpha"),
        ("Market Maker Mode", 1, "alpha"), ("Market Participant State", 1, "alpha"))),
    ("V", "MWCB Decline Level", (
        ("Level 1", 8, "price8"), ("Level 2", 8, "price8"), ("Level 3", 8, "price8"))),
    ("W", "MWCB Status", (("Breached Level", 1, "alpha"),)),
    ("K", "IPO Quoting Period Update", (
        ("Stock", 8, "alpha"), ("IPO Quotation Release Time", 4, "int"),
        ("IPO Quotation Release Qualifier", 1, "alpha"), ("IPO Price", 4, "price4"))),
    ("J", "LULD Auction Collar", (
        ("Stock", 8, "alpha"), ("Auction Collar Reference Price", 4, "price4"),
        ("Upper Auction Collar Price", 4, "price4"), ("Lower Auction Collar Price", 4, "price4"),
        ("Auction Collar Extension", 4, "int"))),
    ("h", "Operational Halt", (
        ("Stock", 8, "alpha"), ("Market Code", 1, "alpha"), ("Operational Halt Action", 1, "alpha"))),
    ("A", "Add Order No MPID Attribution", (
        ("Order Reference Number", 8, "int"), ("Buy/Sell Indicator", 1, "alpha"), ("Shares", 4, "int"),
        ("Stock", 8, "alpha"), ("Price", 4, "price4"))),
    ("F", "Add Order with MPID Attribution", (
        ("Order Reference Number", 8, "int"), ("Buy/Sell Indicator", 1, "alpha"), ("Shares", 4, "int"),
        ("Stock", 8, "alpha"), ("Price", 4, "price4"), ("Attribution", 4, "alpha"))),
    ("E", "Order Executed", (
        ("Order Reference Number", 8, "int"), ("Executed Shares", 4, "int"), ("Match Number", 8, "int"))),
    ("C", "Order Executed With Price", (
        ("Order Reference Number", 8, "int"), ("Executed Shares", 4, "int"), ("Match Number", 8, "int"),
        ("Printable", 1, "alpha"), ("Execution Price", 4, "price4"))),
    ("X", "Order Cancel", (("Order Reference Number", 8, "int"), ("Cancelled Shares", 4, "int"))),
    ("D", "Order Delete", (("Order Reference Number", 8, "int"),)),
    ("U", "Order Replace", (
        ("Original Order Reference Number", 8, "int"), ("New Order Reference Number", 8, "int"),
        ("Shares", 4, "int"), ("Price", 4, "price4"))),
    ("P", "Trade Message (Non-Cross)", (
        ("Order Reference Number", 8, "int"), ("Buy/Sell Indicator", 1, "alpha"), ("Shares", 4, "int"),
        ("Stock", 8, "alpha"), ("Price", 4, "price4"), ("Match Number", 8, "int"))),
    ("Q", "Cross Trade", (
        ("Shares", 8, "int"), ("Stock", 8, "alpha"), ("Cross Price", 4, "price4"), ("Match Number", 8, "int"),
        ("Cross Type", 1, "alpha"))),
    ("B", "Broken Trade / Order Execution", (("Match Number", 8, "int"),)),
    ("I", "Net Order Imbalance Indicator (NOII)", (
        ("Paired Shares", 8, "int"), ("Imbalance Shares", 8, "int"), ("Imbalance Direction", 1, "alpha"),
        ("Stock", 8, "alpha"), ("Far Price", 4, "price4"), ("Near Price", 4, "price4"),
        ("Current Reference Price", 4, "price4"), ("Cross Type", 1, "alpha"),
        ("Price Variation Indicator", 1, "alpha"))),
    ("N", "Retail Price Improvement Indicator (RPII)", (("Stock", 8, "alpha"), ("Interest Flag", 1, "alpha"))),
    ("O", "Direct Listing with Capital Raise Price Discovery", (
        ("Stock", 8, "alpha"), ("Open Eligibility Status", 1, "alpha"), ("Minimum Allowable Price", 4, "price4"),
        ("Maximum Allowable Price", 4, "price4"), ("Near Execution Price", 4, "price4"),
        ("Near Execution Time", 8, "int"), ("Lower Price Range Collar", 4, "price4"),
        ("Upper Price Range Collar", 4, "price4"))),
)


@dataclass(frozen=True)
class Message:
    type: str
    name: str
    fields: tuple[Field, ...]

    @property
    def length(self) -> int:
        last = self.fields[-1]
        return last.offset + last.size

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"ITCH {self.type!r} has no field {name!r}")


def _build() -> dict[str, Message]:
    messages = {}
    for mtype, name, body in _TABLE:
        fields, pos = [], 0
        for fname, size, kind in _HEADER + body:
            fields.append(Field(fname, pos, size, kind))
            pos += size
        messages[mtype] = Message(mtype, name, tuple(fields))
    return messages


MESSAGES: dict[str, Message] = _build()
TYPES = "".join(MESSAGES)          # in specification order

MESSAGE_LENGTH = np.zeros(256, dtype=np.uint16)
for _m in MESSAGES.values():
    MESSAGE_LENGTH[ord(_m.type)] = _m.length
MESSAGE_LENGTH.setflags(write=False)

MAX_MESSAGE_LENGTH = max(m.length for m in MESSAGES.values())


def offset(mtype: str, field: str) -> int:
    """Byte offset of ``field`` within a message of type ``mtype``."""
    return MESSAGES[mtype].field(field).offset


def decode(message: bytes) -> dict:
    """Decode one message into {field name: value}; prices stay integer ticks, alpha fields lose trailing spaces.

    Raises ValueError for an unknown type or a length that does not match the type.
    """
    if not message:
        raise ValueError("empty message")
    spec = MESSAGES.get(chr(message[0]))
    if spec is None:
        raise ValueError(f"unknown ITCH message type 0x{message[0]:02x}")
    if len(message) != spec.length:
        raise ValueError(f"ITCH {spec.type!r} is {spec.length} bytes, got {len(message)}")
    out = {}
    for f in spec.fields:
        raw = message[f.offset:f.offset + f.size]
        if f.kind == "alpha":
            out[f.name] = raw.decode("latin-1").rstrip(" ")
        else:
            out[f.name] = int.from_bytes(raw, "big")
    return out


def all_field_names() -> list[str]:
    """Union of field names over all types, in table order: the columns of messages.csv."""
    names: list[str] = []
    for m in MESSAGES.values():
        for f in m.fields:
            if f.name not in names:
                names.append(f.name)
    return names
