"""The ITCH layout table against the specification, re-typed here as the independent truth.

Nasdaq TotalView-ITCH 5.0, sections 1.1 to 1.9 (lengths as in /work/shared/notes/itch-moldudp64-facts.md).
Each type is given as a literal ``struct`` format and literal values; the bytes are packed from those, never
from ``appliance.itch.layout``, so a wrong size, order or kind in the table shows up as a wrong decode.
"""
from __future__ import annotations

import struct

import pytest

from appliance.itch import layout

SPEC_LENGTH = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21, "A": 36,
    "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19, "I": 50, "N": 20, "O": 48,
}

# Common header, packed as ">cHHHI": type, Stock Locate, Tracking Number, Timestamp high 16 bits, low 32 bits.
LOCATE, TRACKING, TS_HIGH, TS_LOW = 0xBEEF, 0x0102, 0xA1B2, 0xC3D4E5F6
TIMESTAMP = 0xA1B2C3D4E5F6

U32, U32B, U32C, U32D = 0x89ABCDEF, 0x01234567, 0x7F00FF01, 0x00010203
U64, U64B, U64C = 0xFEDCBA9876543210, 0x0123456789ABCDEF, 0x8000000000000001

# type -> (body format after the header, [(field name as in the specification, kind, packed value)])
# kinds: "int", "alpha", "price4", "price8"; alpha values are bytes here and decode to str minus trailing spaces.
SPEC_BODY = {
    "S": ("c", [("Event Code", "alpha", b"O")]),
    "R": ("8sccIcc2scccccIc", [
        ("Stock", "alpha", b"AAPL    "), ("Market Category", "alpha", b"Q"),
        ("Financial Status Indicator", "alpha", b"N"), ("Round Lot Size", "int", U32),
        ("Round Lots Only", "alpha", b"N"), ("Issue Classification", "alpha", b"C"),
        ("Issue Sub-Type", "alpha", b"Z "), ("Authenticity", "alpha", b"P"),
        ("Short Sale Threshold Indicator", "alpha", b"N"), ("IPO Flag", "alpha", b" "),
        ("LULD Reference Price Tier", "alpha", b"1"), ("ETP Flag", "alpha", b"N"),
        ("ETP Leverage Factor", "int", U32B), ("Inverse Indicator", "alpha", b"Y")]),
    "H": ("8scc4s", [
        ("Stock", "alpha", b"ABCDEFGH"), ("Trading State", "alpha", b"T"), ("Reserved", "alpha", b"x"),
        ("Reason", "alpha", b"MWC1")]),
    "Y": ("8sc", [("Stock", "alpha", b"MSFT    "), ("Reg SHO Action", "alpha", b"1")]),
    "L": ("4s8sccc", [
        ("MPID", "alpha", b"GSCO"), ("Stock", "alpha", b"IBM     "), ("Primary Market Maker", "alpha", b"Y"),
        ("Market Maker Mode", "alpha", b"N"), ("Market Participant State", "alpha", b"A")]),
    "V": ("QQQ", [("Level 1", "price8", U64), ("Level 2", "price8", U64B), ("Level 3", "price8", U64C)]),
    "W": ("c", [("Breached Level", "alpha", b"2")]),
    "K": ("8sIcI", [
        ("Stock", "alpha", b"NEWCO   "), ("IPO Quotation Release Time", "int", U32),
        ("IPO Quotation Release Qualifier", "alpha", b"A"), ("IPO Price", "price4", U32B)]),
    "J": ("8sIIII", [
        ("Stock", "alpha", b"ZVZZT   "), ("Auction Collar Reference Price", "price4", U32),
        ("Upper Auction Collar Price", "price4", U32B), ("Lower Auction Collar Price", "price4", U32C),
        ("Auction Collar Extension", "int", U32D)]),
    "h": ("8scc", [
        ("Stock", "alpha", b"QQQ     "), ("Market Code", "alpha", b"Q"),
        ("Operational Halt Action", "alpha", b"H")]),
    "A": ("QcI8sI", [
        ("Order Reference Number", "int", U64), ("Buy/Sell Indicator", "alpha", b"B"), ("Shares", "int", U32),
        ("Stock", "alpha", b"AMZN    "), ("Price", "price4", U32B)]),
    "F": ("QcI8sI4s", [
        ("Order Reference Number", "int", U64), ("Buy/Sell Indicator", "alpha", b"S"), ("Shares", "int", U32),
        ("Stock", "alpha", b"GOOGL   "), ("Price", "price4", U32B), ("Attribution", "alpha", b"NITE")]),
    "E": ("QIQ", [
        ("Order Reference Number", "int", U64), ("Executed Shares", "int", U32), ("Match Number", "int", U64B)]),
    "C": ("QIQcI", [
        ("Order Reference Number", "int", U64), ("Executed Shares", "int", U32), ("Match Number", "int", U64B),
        ("Printable", "alpha", b"N"), ("Execution Price", "price4", U32B)]),
    "X": ("QI", [("Order Reference Number", "int", U64), ("Cancelled Shares", "int", U32)]),
    "D": ("Q", [("Order Reference Number", "int", U64)]),
    "U": ("QQII", [
        ("Original Order Reference Number", "int", U64), ("New Order Reference Number", "int", U64B),
        ("Shares", "int", U32), ("Price", "price4", U32B)]),
    "P": ("QcI8sIQ", [
        ("Order Reference Number", "int", U64C), ("Buy/Sell Indicator", "alpha", b"B"), ("Shares", "int", U32),
        ("Stock", "alpha", b"TSLA    "), ("Price", "price4", U32B), ("Match Number", "int", U64)]),
    "Q": ("Q8sIQc", [
        ("Shares", "int", U64), ("Stock", "alpha", b"NVDA    "), ("Cross Price", "price4", U32),
        ("Match Number", "int", U64B), ("Cross Type", "alpha", b"O")]),
    "B": ("Q", [("Match Number", "int", U64)]),
    "I": ("QQc8sIIIcc", [
        ("Paired Shares", "int", U64), ("Imbalance Shares", "int", U64B), ("Imbalance Direction", "alpha", b"B"),
        ("Stock", "alpha", b"META    "), ("Far Price", "price4", U32), ("Near Price", "price4", U32B),
        ("Current Reference Price", "price4", U32C), ("Cross Type", "alpha", b"C"),
        ("Price Variation Indicator", "alpha", b"L")]),
    "N": ("8sc", [("Stock", "alpha", b"AMD     "), ("Interest Flag", "alpha", b"A")]),
    "O": ("8scIIIQII", [
        ("Stock", "alpha", b"DLCO    "), ("Open Eligibility Status", "alpha", b"Y"),
        ("Minimum Allowable Price", "price4", U32), ("Maximum Allowable Price", "price4", U32B),
        ("Near Execution Price", "price4", U32C), ("Near Execution Time", "int", U64),
        ("Lower Price Range Collar", "price4", U32D), ("Upper Price Range Collar", "price4", 0xFFFFFFFF)]),
}

HEADER_FIELDS = [("Message Type", 0, 1), ("Stock Locate", 1, 2), ("Tracking Number", 3, 2), ("Timestamp", 5, 6)]

# Offsets of the book-building fields, as published (facts sheet, "Offsets of the book-building fields").
BOOK_OFFSETS = [
    ("A", "Order Reference Number", 11), ("A", "Buy/Sell Indicator", 19), ("A", "Shares", 20),
    ("A", "Stock", 24), ("A", "Price", 32), ("F", "Attribution", 36),
    ("E", "Order Reference Number", 11), ("E", "Executed Shares", 19), ("E", "Match Number", 23),
    ("C", "Printable", 31), ("C", "Execution Price", 32),
    ("X", "Order Reference Number", 11), ("X", "Cancelled Shares", 19), ("D", "Order Reference Number", 11),
    ("U", "Original Order Reference Number", 11), ("U", "New Order Reference Number", 19), ("U", "Shares", 27),
    ("U", "Price", 31),
    ("P", "Order Reference Number", 11), ("P", "Buy/Sell Indicator", 19), ("P", "Shares", 20), ("P", "Stock", 24),
    ("P", "Price", 32), ("P", "Match Number", 36),
    ("Q", "Shares", 11), ("Q", "Stock", 19), ("Q", "Cross Price", 27), ("Q", "Match Number", 31),
    ("Q", "Cross Type", 39), ("B", "Match Number", 11), ("R", "Stock", 11),
]


def build(mtype: str) -> bytes:
    fmt, fields = SPEC_BODY[mtype]
    return struct.pack(">cHHHI" + fmt, mtype.encode(), LOCATE, TRACKING, TS_HIGH, TS_LOW,
                       *[value for _, _, value in fields])


def expected(mtype: str) -> dict:
    out = {"Message Type": mtype, "Stock Locate": LOCATE, "Tracking Number": TRACKING, "Timestamp": TIMESTAMP}
    for name, kind, value in SPEC_BODY[mtype][1]:
        out[name] = value.decode("ascii").rstrip(" ") if kind == "alpha" else value
    return out


def test_the_table_has_exactly_the_23_types_of_itch_5_0():
    assert sorted(layout.MESSAGES) == sorted(SPEC_LENGTH)
    assert sorted(layout.TYPES) == sorted(SPEC_LENGTH) and len(layout.TYPES) == 23


@pytest.mark.parametrize("mtype", sorted(SPEC_LENGTH))
def test_length_matches_the_specification(mtype):
    assert layout.MESSAGES[mtype].length == SPEC_LENGTH[mtype]
    assert len(build(mtype)) == SPEC_LENGTH[mtype], "the test's own struct format disagrees with its length"


@pytest.mark.parametrize("mtype", sorted(SPEC_LENGTH))
def test_fields_are_contiguous_from_offset_zero_and_in_specification_order(mtype):
    fields = layout.MESSAGES[mtype].fields
    spec_names = [name for name, _, _ in HEADER_FIELDS] + [name for name, _, _ in SPEC_BODY[mtype][1]]
    assert [f.name for f in fields] == spec_names
    assert [(f.name, f.offset, f.size) for f in fields[:4]] == HEADER_FIELDS
    position = 0
    for f in fields:
        assert f.offset == position, f"{mtype} {f.name}: offset {f.offset}, previous field ends at {position}"
        assert f.size > 0
        position += f.size
    assert position == SPEC_LENGTH[mtype]


@pytest.mark.parametrize("mtype", sorted(SPEC_LENGTH))
def test_field_kinds_match_the_specification(mtype):
    kinds = {f.name: f.kind for f in layout.MESSAGES[mtype].fields}
    assert kinds["Message Type"] == "alpha" and kinds["Timestamp"] == "timestamp"
    assert kinds["Stock Locate"] == kinds["Tracking Number"] == "int"
    for name, kind, _ in SPEC_BODY[mtype][1]:
        assert kinds[name] == kind, f"{mtype} {name}"


@pytest.mark.parametrize("mtype", sorted(SPEC_LENGTH))
def test_decode_of_hand_built_bytes(mtype):
    assert layout.decode(build(mtype)) == expected(mtype)


@pytest.mark.parametrize("mtype, field, position", BOOK_OFFSETS)
def test_book_building_offsets(mtype, field, position):
    assert layout.offset(mtype, field) == position


def test_message_length_table_agrees_for_every_byte():
    assert layout.MESSAGE_LENGTH.shape == (256,)
    for byte in range(256):
        want = SPEC_LENGTH.get(chr(byte), 0)
        assert int(layout.MESSAGE_LENGTH[byte]) == want, f"type byte 0x{byte:02x}"
    assert layout.MAX_MESSAGE_LENGTH == 50


@pytest.mark.parametrize("bad", [b"", b"Z" + bytes(35), build("A")[:-1], build("A") + b"\x00", b"a" * 36])
def test_decode_refuses_unknown_types_and_wrong_lengths(bad):
    with pytest.raises(ValueError):
        layout.decode(bad)


def test_all_field_names_is_the_union_in_table_order_without_repeats():
    names = layout.all_field_names()
    assert len(names) == len(set(names))
    assert names[:4] == [name for name, _, _ in HEADER_FIELDS]
    every = {name for fmt_fields in SPEC_BODY.values() for name, _, _ in fmt_fields[1]}
    assert set(names) == every | {name for name, _, _ in HEADER_FIELDS}
