"""Builders for hand-made inputs: ITCH messages, MoldUDP64 packets, Ethernet/IPv4/UDP frames, and the three
file formats.  Test scaffolding, not part of the reference; messages are encoded from the layout table, which
``tests/test_layout.py`` pins to the specification.
"""
from __future__ import annotations

import gzip as _gzip
import struct
from pathlib import Path

from appliance.itch.layout import MESSAGES

GROUP_A, GROUP_B, PORT = "233.54.12.1", "233.54.12.2", 26400
SESSION = b"TEST000001"


# -- ITCH ---------------------------------------------------------------------------------------------
def itch(mtype: str, fields: dict | None = None, *, locate: int = 1, ts: int = 0) -> bytes:
    """A message of ``mtype`` with the named fields set (missing ints 0, missing alpha blank)."""
    values = {"Message Type": mtype, "Stock Locate": locate, "Tracking Number": 0, "Timestamp": ts,
              **(fields or {})}
    out = bytearray()
    for f in MESSAGES[mtype].fields:
        value = values.get(f.name, 0 if f.kind != "alpha" else "")
        if f.kind == "alpha":
            out += str(value).encode("latin-1").ljust(f.size, b" ")[:f.size]
        else:
            out += int(value).to_bytes(f.size, "big")
    return bytes(out)


def directory(locate, stock, ts=0):
    return itch("R", {"Stock": stock}, locate=locate, ts=ts)


def add(ref, side, shares, price, *, locate=1, ts=0, mpid=None):
    fields = {"Order Reference Number": ref, "Buy/Sell Indicator": side, "Shares": shares, "Price": price}
    if mpid is None:
        return itch("A", fields, locate=locate, ts=ts)
    return itch("F", {**fields, "Attribution": mpid}, locate=locate, ts=ts)


def execute(ref, shares, match, *, locate=1, ts=0):
    return itch("E", {"Order Reference Number": ref, "Executed Shares": shares, "Match Number": match},
                locate=locate, ts=ts)


def execute_at(ref, shares, match, price, printable="Y", *, locate=1, ts=0):
    return itch("C", {"Order Reference Number": ref, "Executed Shares": shares, "Match Number": match,
                      "Printable": printable, "Execution Price": price}, locate=locate, ts=ts)


def cancel(ref, shares, *, locate=1, ts=0):
    return itch("X", {"Order Reference Number": ref, "Cancelled Shares": shares}, locate=locate, ts=ts)


def delete(ref, *, locate=1, ts=0):
    return itch("D", {"Order Reference Number": ref}, locate=locate, ts=ts)


def replace(ref, new_ref, shares, price, *, locate=1, ts=0):
    return itch("U", {"Original Order Reference Number": ref, "New Order Reference Number": new_ref,
                      "Shares": shares, "Price": price}, locate=locate, ts=ts)


def trade(side, shares, price, match, *, locate=1, ts=0):
    return itch("P", {"Buy/Sell Indicator": side, "Shares": shares, "Price": price, "Match Number": match},
                locate=locate, ts=ts)


def cross(shares, price, match, *, locate=1, ts=0):
    return itch("Q", {"Shares": shares, "Cross Price": price, "Match Number": match, "Cross Type": "O"},
                locate=locate, ts=ts)


def broken(match, *, locate=1, ts=0):
    return itch("B", {"Match Number": match}, locate=locate, ts=ts)


def system_event(code="O", ts=0):
    return itch("S", {"Event Code": code}, locate=0, ts=ts)


# -- MoldUDP64 ----------------------------------------------------------------------------------------
def mold(sequence: int, messages=(), *, session: bytes = SESSION, count: int | None = None) -> bytes:
    """A downstream packet; ``count`` defaults to len(messages) (0 = heartbeat, 0xFFFF = end of session)."""
    blocks = b"".join(struct.pack(">H", len(m)) + m for m in messages)
    return session.ljust(10, b" ") + struct.pack(">QH", sequence, len(messages) if count is None else count) \
        + blocks


def heartbeat(sequence, *, session=SESSION):
    return mold(sequence, count=0, session=session)


def end_of_session(sequence, *, session=SESSION):
    return mold(sequence, count=0xFFFF, session=session)


# -- Ethernet / IPv4 / UDP ----------------------------------------------------------------------------
def ipv4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def udp_frame(payload: bytes, *, group: str = GROUP_A, port: int = PORT, vlans=(), ip_options: bytes = b"",
              flags_fragment: int = 0x4000, protocol: int = 17, version: int = 4, ihl: int | None = None,
              total_length: int | None = None, udp_length: int | None = None, ethertype: int = 0x0800,
              pad_to: int = 60) -> bytes:
    """An Ethernet II frame carrying ``payload`` in UDP; every header field can be made to lie."""
    udp = struct.pack(">HHHH", 31000, port, 8 + len(payload) if udp_length is None else udp_length, 0) + payload
    header_length = 20 + len(ip_options)
    ip = struct.pack(">BBHHHBBH4s4s",
                     (version << 4) | (header_length // 4 if ihl is None else ihl), 0,
                     header_length + len(udp) if total_length is None else total_length,
                     0x1234, flags_fragment, 32, protocol, 0, ipv4("10.0.0.1"), ipv4(group)) + ip_options
    tags = b"".join(struct.pack(">HH", tpid, 100 + i) for i, tpid in enumerate(vlans))
    frame = bytes.fromhex("01005e000001") + bytes.fromhex("020000000001") + tags + struct.pack(">H", ethertype) \
        + ip + udp
    return frame.ljust(pad_to, b"\x00")


# -- files --------------------------------------------------------------------------------------------
def _frames(frames):
    """Items are frame bytes (captured whole) or (captured bytes, wire length)."""
    for item in frames:
        yield (item, len(item)) if isinstance(item, (bytes, bytearray)) else item


def pcap_bytes(frames, *, linktype=1, nanos=False, big_endian=False) -> bytes:
    order = ">" if big_endian else "<"
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B23C4D if nanos else 0xA1B2C3D4, 2, 4, 0, 0, 65535,
                                linktype))
    for i, (data, wire) in enumerate(_frames(frames)):
        out += struct.pack(order + "IIII", 1_700_000_000 + i, i, len(data), wire) + data
    return bytes(out)


def _block(order, block_type, body) -> bytes:
    body = body + b"\x00" * (-len(body) % 4)
    return struct.pack(order + "II", block_type, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))


def pcapng_bytes(frames, *, linktype=1, big_endian=False, simple=False, tsresol=9) -> bytes:
    """One section, one interface (if_tsresol option), frames as EPB (or SPB when ``simple``)."""
    order = ">" if big_endian else "<"
    out = bytearray(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    options = struct.pack(order + "HH", 9, 1) + bytes([tsresol]) + b"\x00" * 3 + struct.pack(order + "HH", 0, 0)
    out += _block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + options)
    out += _block(order, 0x0000000D, b"skipped custom block")        # unknown block types are skipped
    for i, (data, wire) in enumerate(_frames(frames)):
        if simple:
            out += _block(order, 3, struct.pack(order + "I", wire) + data)
        else:
            out += _block(order, 6, struct.pack(order + "IIIII", 0, 0, i, len(data), wire) + data)
    return bytes(out)


def dayfile_bytes(messages) -> bytes:
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def write(path, data: bytes, *, gzip: bool = False) -> Path:
    path = Path(path)
    path.write_bytes(_gzip.compress(data) if gzip else data)
    return path


# -- synthetic book activity --------------------------------------------------------------------------
def book_activity(rng, count: int, locates=(1, 2, 3), *, start_ts: int = 34_200_000_000_000,
                  max_step_ns: int = 40_000_000) -> list[bytes]:
    """``count`` messages of plausible order flow (plus a few hostile ones: unknown refs, rejected adds),
    beginning with a stock directory entry per locate; timestamps rise by up to ``max_step_ns``."""
    out = [directory(locate, f"SYM{locate}", ts=start_ts) for locate in locates]
    live: dict[int, tuple[int, str]] = {}            # ref -> (locate, side)
    next_ref, match, ts = 1000, 1, start_ts
    while len(out) < count:
        ts += rng.randrange(max_step_ns)
        roll = rng.random()
        if roll < 0.35 or not live:
            locate, side = rng.choice(locates), rng.choice("BS")
            price = 1_000_000 + rng.randrange(-40, 40) * 100 + (-1500 if side == "B" else 1500)
            mpid = "MPID" if rng.random() < 0.1 else None
            out.append(add(next_ref, side, rng.randrange(1, 20) * 100, price, locate=locate, ts=ts, mpid=mpid))
            live[next_ref] = (locate, side)
            next_ref += 1
            continue
        ref = rng.choice(list(live))
        locate = live[ref][0]
        if roll < 0.45:
            out.append(execute(ref, rng.randrange(1, 1500), match, locate=locate, ts=ts))
            match += 1
        elif roll < 0.50:
            out.append(execute_at(ref, rng.randrange(1, 1500), match, 1_000_000 + rng.randrange(-9, 9) * 100,
                                  rng.choice("YYN"), locate=locate, ts=ts))
            match += 1
        elif roll < 0.60:
            out.append(cancel(ref, rng.randrange(1, 1500), locate=locate, ts=ts))
        elif roll < 0.72:
            out.append(delete(ref, locate=locate, ts=ts))
            live.pop(ref)
        elif roll < 0.82:
            out.append(replace(ref, next_ref, rng.randrange(1, 20) * 100, 1_000_000 + rng.randrange(-40, 40) * 100,
                               locate=locate, ts=ts))
            live[next_ref] = live.pop(ref)
            next_ref += 1
        elif roll < 0.90:
            out.append(trade(rng.choice("BS"), rng.randrange(1, 500), 1_000_000 + rng.randrange(-9, 9) * 100,
                             match, locate=rng.choice(locates), ts=ts))
            match += 1
        elif roll < 0.93:
            out.append(cross(rng.randrange(1, 100_000), 1_000_000, match, locate=rng.choice(locates), ts=ts))
            match += 1
        elif roll < 0.95:
            out.append(broken(rng.randrange(1, match + 1), locate=0, ts=ts))
        elif roll < 0.97:                                  # a reference that was never added
            ghost = next_ref + 1_000_000
            out.append(rng.choice([delete(ghost, locate=locate, ts=ts), cancel(ghost, 5, locate=locate, ts=ts),
                                   execute(ghost, 5, match, locate=locate, ts=ts)]))
        else:
            out.append(add(ref, "S", 100, 1_000_000, locate=locate, ts=ts))               # live ref: rejected
    return out
