"""The synthetic feed generator: determinism, realism, framing in every format, the manifest, the sample.

The order-flow checks replay the generated messages through a small pure-Python book written here from the
ITCH specification (not from the generator's code); the framing checks read the files back with scapy,
tshark and a struct-level parser written here.
"""
from __future__ import annotations

import collections
import gzip
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.utils import PcapNgReader, rdpcap

from appliance._jit import kernel
from appliance.cli import main
from appliance.errors import UserError
from appliance.gen import FeedSpec, generate_messages, write_feed
from appliance.gen.presets import preset
from appliance.gen.rng import Stream, next_u64, stream_key
from appliance.gen.wire import line_headers, mold_payload, udp_frame
from appliance.itch.layout import MESSAGES, TYPES, decode

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pcaps" / "sample.pcap"
SPEC = FeedSpec(seed=7)                               # 20,000 messages, 300 instruments
MIDNIGHT_NS = 1_795_564_800 * 10**9                   # 2026-11-25 00:00 UTC
PORT = 26400
GROUPS = {"233.54.12.1": "A", "233.54.12.2": "B"}


# -- helpers written from the specifications -------------------------------------------------------------
def split(buf: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    ends = list(offsets[1:]) + [len(buf)]
    return [bytes(buf[a:b]) for a, b in zip(offsets, ends)]


def checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def mold_blocks(payload: bytes):
    """(session, sequence, count, [messages]) of a well-formed MoldUDP64 packet, else None."""
    if len(payload) < 20:
        return None
    session, seq, count = payload[:10].decode("latin-1"), *struct.unpack_from(">QH", payload, 10)
    if count in (0, 0xFFFF):
        return (session, seq, count, []) if len(payload) == 20 else None
    messages, q = [], 20
    for _ in range(count):
        if q + 2 > len(payload):
            return None
        (length,) = struct.unpack_from(">H", payload, q)
        body = payload[q + 2:q + 2 + length]
        if length == 0 or len(body) < length or chr(body[0]) not in MESSAGES \
                or MESSAGES[chr(body[0])].length != length:
            return None
        messages.append(body)
        q += 2 + length
    return (session, seq, count, messages) if q == len(payload) else None


def feed_datagram(frame: bytes, wirelen: int):
    """(line, UDP payload) of a whole, unfragmented IPv4/UDP datagram to a feed line, else None."""
    if len(frame) < wirelen:
        return None
    pos, ethertype = 14, struct.unpack_from(">H", frame, 12)[0]
    while ethertype in (0x8100, 0x88A8):
        ethertype = struct.unpack_from(">H", frame, pos + 2)[0]
        pos += 4
    if ethertype != 0x0800:
        return None
    ihl = (frame[pos] & 15) * 4
    total, flags, proto = struct.unpack_from(">H", frame, pos + 2)[0], frame[pos + 6], frame[pos + 9]
    if pos + total > len(frame) or flags & 0x3F or struct.unpack_from(">H", frame, pos + 6)[0] & 0x1FFF \
            or proto != 17:
        return None
    udp = pos + ihl
    length = struct.unpack_from(">H", frame, udp + 4)[0]
    if udp + length > pos + total:
        return None
    return GROUPS[".".join(map(str, frame[pos + 16:pos + 20]))], frame[udp + 8:udp + length]


class PlainBook:
    """Live orders by reference, per instrument; slow and obvious."""

    def __init__(self):
        self.live: dict[int, list] = {}          # ref -> [locate, side, shares, price]
        self.by_locate = collections.defaultdict(set)

    def add(self, ref, locate, side, shares, price):
        self.live[ref] = [locate, side, shares, price]
        self.by_locate[locate].add(ref)

    def remove(self, ref):
        self.by_locate[self.live.pop(ref)[0]].discard(ref)

    def best(self, locate, side):
        """(best price, the oldest order at it) on one side, or (None, None)."""
        refs = [r for r in self.by_locate[locate] if self.live[r][1] == side]
        if not refs:
            return None, None
        price = (max if side == "B" else min)(self.live[r][3] for r in refs)
        return price, min(r for r in refs if self.live[r][3] == price)

    def crossed(self, locate):
        bid, ask = self.best(locate, "B")[0], self.best(locate, "S")[0]
        return bid is not None and ask is not None and bid >= ask


def replay_book(messages: list[bytes]) -> collections.Counter:
    """Replay the order flow through a plain book; count every way the generator could have broken it."""
    book, issues, halted, max_ref, last_ts = PlainBook(), collections.Counter(), set(), 0, -1
    for raw in messages:
        m, t = decode(raw), chr(raw[0])
        issues["time went back"] += m["Timestamp"] < last_ts
        last_ts, locate = m["Timestamp"], m["Stock Locate"]
        ref = m.get("Order Reference Number", m.get("Original Order Reference Number"))
        new = ref if t in "AF" else m.get("New Order Reference Number")
        if t in "ECXDU" and ref not in book.live:
            issues[f"{t} on an unknown order"] += 1
            continue
        order = book.live.get(ref)
        if t in "EC":
            issues["execution while halted"] += locate in halted
            issues["execution not at the top of the book"] += book.best(locate, order[1])[1] != ref
            issues["executed more than left"] += not 0 < m["Executed Shares"] <= order[2]
            order[2] -= m["Executed Shares"]
        elif t == "X":
            issues["cancel not partial"] += not 0 < m["Cancelled Shares"] < order[2]
            order[2] -= m["Cancelled Shares"]
        elif t == "H":
            (halted.discard if m["Trading State"] == "T" else halted.add)(locate)
        elif t == "h":
            (halted.add if m["Operational Halt Action"] == "H" else halted.discard)(locate)
        elif t == "P":
            issues["trade while halted"] += locate in halted
        if t in "DU" or (t in "EC" and order[2] == 0):
            book.remove(ref)
        if new is not None:
            issues["reference not increasing"] += new <= max_ref
            max_ref = max(max_ref, new)
            side, shares, price = (m["Buy/Sell Indicator"], m["Shares"], m["Price"]) if t in "AF" else \
                (order[1], m["Shares"], m["Price"])
            book.add(new, locate if t in "AF" else order[0], side, shares, price)
            issues["crossed book"] += book.crossed(locate)
    return +issues


# -- the messages ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def day() -> list[bytes]:
    return split(*generate_messages(SPEC))


def test_same_seed_same_bytes_and_another_seed_other_bytes(day):
    assert split(*generate_messages(FeedSpec(seed=7))) == day
    assert split(*generate_messages(FeedSpec(seed=8)))[400:500] != day[400:500]


def test_every_type_appears_and_every_length_comes_from_the_layout(day):
    assert len(day) == SPEC.messages
    counts = collections.Counter(chr(m[0]) for m in day)
    assert set(counts) == set(TYPES)
    assert all(len(m) == MESSAGES[chr(m[0])].length for m in day)
    stamps = [int.from_bytes(m[5:11], "big") for m in day]
    assert stamps == sorted(stamps)


def test_day_opens_with_the_directory_and_runs_through_the_system_events_in_order(day):
    events = [decode(m)["Event Code"] for m in day if m[:1] == b"S"]
    assert events == list("OSQMEC") and day[0][:1] == b"S" and day[-1][:1] == b"S"
    directory = [decode(m) for m in day if m[:1] == b"R"]
    assert [d["Stock Locate"] for d in directory] == list(range(1, SPEC.instruments + 1))
    names = [m[11:19] for m in day if m[:1] == b"R"]
    assert len(set(names)) == SPEC.instruments
    assert all(re.fullmatch(rb"[A-Z]{1,8} *", n) for n in names)
    first_order = next(i for i, m in enumerate(day) if m[:1] in b"AF")
    assert max(i for i, m in enumerate(day) if m[:1] == b"R") < first_order


def test_order_flow_only_touches_live_orders_and_executes_at_the_top_of_the_book(day):
    assert replay_book(day) == collections.Counter()


def test_message_mix_locality_replace_chains_and_skew(day):
    counts = collections.Counter(chr(m[0]) for m in day)
    share = {t: counts[t] / len(day) for t in TYPES}
    assert 0.35 < share["A"] < 0.50 and 0.28 < share["D"] < 0.42 and 0.06 < share["U"] < 0.13
    assert 0.02 < share["E"] < 0.06 and 0.01 < share["X"] < 0.035 and 0.01 < share["F"] < 0.025
    assert 0 < share["P"] < 0.02 and 0 < share["C"] < 0.01 and counts["B"] >= 1
    assert {decode(m)["Printable"] for m in day if m[:1] == b"C"} == {"Y", "N"}
    newest, distance, made_by_replace, chained = 0, [], set(), 0
    for m in day:
        t = m[:1]
        if t in (b"A", b"F"):
            newest = int.from_bytes(m[11:19], "big")
        elif t in (b"D", b"X", b"U"):
            ref = int.from_bytes(m[11:19], "big")
            distance.append(newest - ref)
            if t == b"U":
                chained += ref in made_by_replace
                made_by_replace.add(int.from_bytes(m[19:27], "big"))
                newest = int.from_bytes(m[19:27], "big")
    distance = np.array(distance)
    assert np.mean(distance < 64) > 0.5, "cancels should mostly hit orders added moments ago"
    assert np.mean(distance > 1000) > 0.02, "a minority should hit old orders"
    assert chained > 0.1 * counts["U"], "replace chains: U on an order that a U created"
    adds = collections.Counter(decode(m)["Stock Locate"] for m in day if m[:1] in b"AF")
    busiest = sum(n for _, n in adds.most_common(SPEC.instruments // 10))
    assert busiest > 0.5 * sum(adds.values()), "a tenth of the instruments carry most of the flow"
    prices = [decode(m)["Price"] for m in day if m[:1] in b"AFU"]
    assert all(p % 100 == 0 and 10_000 <= p <= 6_000_000 for p in prices)


@kernel
def _kernel_draws(key, state, out):
    for i in range(out.shape[0]):
        out[i] = next_u64(key, state, 0)


def test_kernel_random_numbers_equal_their_vector_twin():
    out = np.zeros(1000, np.uint64)
    _kernel_draws(stream_key(5, "twin"), np.zeros(1, np.int64), out)
    assert np.array_equal(out, Stream(5, "twin").u64(1000))


def test_a_tiny_day_still_has_its_system_events_and_directory():
    msgs = split(*generate_messages(FeedSpec(messages=60, instruments=40)))
    assert len(msgs) == 60 and sum(m[:1] == b"R" for m in msgs) == 40 and sum(m[:1] == b"S" for m in msgs) == 6
    assert replay_book(msgs) == collections.Counter()


# -- pcap, read back --------------------------------------------------------------------------------------
HOSTILE = FeedSpec(seed=3, messages=8000, instruments=100, ab=True, gaps=2, gaps_on="A", gaps_both=1, malformed=11,
                   vlan=5, qinq=True, ip_options=True, heartbeat_every_ns=5 * 10**9)
QUIET = 10**10          # heartbeat every 10 s: fewer frames to read back where heartbeats are not the point


@pytest.fixture(scope="module")
def hostile_pcap(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "hostile.pcap"
    manifest = write_feed(path, HOSTILE)
    return manifest, rdpcap(str(path))


def test_pcap_frames_are_well_formed_and_carry_exactly_the_generated_messages(hostile_pcap):
    manifest, frames = hostile_pcap
    assert len(frames) == manifest.frames == manifest.packets
    assert [float(f.time) for f in frames] == sorted(float(f.time) for f in frames)
    messages = split(*generate_messages(HOSTILE))
    by_seq, seqs, heartbeats, ends, bad, dropped_early = {}, collections.defaultdict(set), 0, 0, 0, 0
    per_line = collections.Counter()
    for f in frames:
        raw = bytes(f)
        found = feed_datagram(raw, f.wirelen)
        if found is None:
            dropped_early += 1
            continue
        line, payload = found
        eth = Ether(raw)
        assert eth.haslayer(Dot1AD) and eth[Dot1Q].vlan == 5 and eth[Dot1AD].vlan == 200
        ip = eth[IP]
        assert ip.ihl == 6 and ip.ttl == 64 and not ip.flags.DF and bytes(ip)[20:24] == b"\x01\x01\x01\x00"
        assert checksum_ok(bytes(ip)[:24]) and ip[UDP].dport == PORT
        assert eth.dst == "01:00:5e:" + ":".join(f"{int(x) & (0x7F if i == 1 else 0xFF):02x}"
                                                for i, x in enumerate(ip.dst.split(".")) if i)
        packet = mold_blocks(payload)
        if packet is None:
            bad += 1
            continue
        session, seq, count, blocks = packet
        assert session == HOSTILE.session
        per_line[line] += 1
        heartbeats += count == 0
        ends += count == 0xFFFF
        for i, block in enumerate(blocks):
            assert by_seq.setdefault(seq + i, block) == block, "A and B copies must carry the same bytes"
            seqs[line].add(seq + i)
        if blocks:
            stamp = int.from_bytes(blocks[-1][5:11], "big")
            delay = int(f.time * 10**9) - MIDNIGHT_NS - stamp
            assert delay == 0 if line == "A" else 2_000 <= delay <= 8_000
    assert (bad, dropped_early) == (manifest.expected_bad_packets, manifest.expected_frame_drops) == (6, 5)
    assert heartbeats == manifest.heartbeats > 0 and ends == manifest.end_of_session == 2
    assert dict(per_line) == manifest.packets_by_line
    lost = {s for a, b in manifest.gaps for s in range(a, b + 1)}
    assert sorted(by_seq) == [s for s in range(1, HOSTILE.messages + 1) if s not in lost]
    assert all(by_seq[s] == messages[s - 1] for s in by_seq)
    assert len(manifest.dropped) == 3 and manifest.dropped_lines.count("both") == 1
    for (a, b), where in zip(manifest.dropped, manifest.dropped_lines):
        assert not seqs["A"] & set(range(a, b + 1))
        assert (where == "both") == (not seqs["B"] & set(range(a, b + 1)))
    assert manifest.expected_messages == HOSTILE.messages - len(lost)
    assert sum(manifest.malformed.values()) == 11 and all(n == 1 for n in manifest.malformed.values())


def test_hostile_frames_are_what_the_manifest_says(hostile_pcap):
    _, frames = hostile_pcap
    arp = [f for f in frames if f.haslayer(ARP)]
    igmp = [f for f in frames if f.haslayer(IP) and f[IP].proto == 2]
    fragments = [f for f in frames if f.haslayer(IP) and f[IP].flags.MF]
    cut = [f for f in frames if len(bytes(f)) < f.wirelen]
    assert (len(arp), len(igmp), len(fragments), len(cut)) == (1, 1, 1, 1)
    assert igmp[0][IP].dst == "233.54.12.1" and checksum_ok(bytes(igmp[0][IP])[:24])


def test_kernel_frames_equal_the_python_twin(tmp_path):
    spec = FeedSpec(seed=9, messages=3000, instruments=20, ab=True, vlan=12, ip_options=True)
    path = tmp_path / "twin.pcap"
    write_feed(path, spec)
    messages = split(*generate_messages(spec))
    lines = {h.name: h for h in line_headers(spec)}
    idents = collections.Counter()
    for f in rdpcap(str(path), count=300):
        raw = bytes(f)
        line, payload = feed_datagram(raw, f.wirelen)
        session, seq, count, blocks = mold_blocks(payload)
        first = seq - 1
        expected = udp_frame(lines[line], mold_payload(session.encode(), seq, count,
                                                       messages[first:first + len(blocks)]), idents[line], spec.source)
        assert raw == expected
        idents[line] += 1


@pytest.mark.parametrize("nanosecond,big_endian,magic", [(True, False, "4d3cb2a1"), (False, True, "a1b2c3d4")])
def test_pcap_timestamp_resolution_and_byte_order(tmp_path, nanosecond, big_endian, magic):
    path = tmp_path / "feed.pcap"
    manifest = write_feed(path, FeedSpec(messages=3000, instruments=20, heartbeat_every_ns=QUIET),
                          nanosecond=nanosecond, big_endian=big_endian)
    head = path.read_bytes()[:24]
    assert head[:4].hex() == magic
    assert struct.unpack((">" if big_endian else "<") + "IHHiIII", head)[1:] == (2, 4, 0, 0, 65535, 1)
    frames = rdpcap(str(path))
    assert len(frames) == manifest.frames
    first = int(frames[0].time * 10**9) - MIDNIGHT_NS
    assert first == (9 * 3600 + 24 * 60) * 10**9           # compact timeline: start of messages 09:24


@pytest.mark.parametrize("tsresol,spb,big_endian", [(9, False, False), (6, False, True), (0x94, False, False),
                                                     (9, True, False)])
def test_pcapng_blocks_resolutions_and_byte_order(tmp_path, tsresol, spb, big_endian):
    spec = FeedSpec(seed=4, messages=3000, instruments=30, ab=True, malformed=11, heartbeat_every_ns=QUIET)
    write_feed(tmp_path / "classic.pcap", spec)
    classic = rdpcap(str(tmp_path / "classic.pcap"))
    path = tmp_path / "feed.pcapng"
    manifest = write_feed(path, spec, fmt="pcapng", pcapng_tsresol=tsresol, pcapng_spb=spb, big_endian=big_endian)
    raw = path.read_bytes()
    assert raw[:4] == b"\x0a\x0d\x0d\x0a" and raw[8:12] == (b"\x1a\x2b\x3c\x4d" if big_endian else b"\x4d\x3c\x2b\x1a")
    frames = list(PcapNgReader(str(path)))
    assert len(frames) == manifest.frames == len(classic)
    assert [bytes(f) for f in frames] == [bytes(f) for f in classic]
    if not spb:
        step_ns = 1 if tsresol == 9 else 1000          # 10**-6 s, or 2**-20 s (954 ns)
        assert all(0 <= int(b.time * 10**9) - int(a.time * 10**9) < step_ns for a, b in zip(frames, classic))
        assert sum(f.wirelen > len(bytes(f)) for f in frames) == 1        # the frame cut short


def test_day_file_framing_gzip_and_refusals(tmp_path, day):
    path = tmp_path / "day.itch"
    manifest = write_feed(path, SPEC, fmt="dayfile")
    raw, out, q = path.read_bytes(), [], 0
    while q < len(raw):
        (length,) = struct.unpack_from(">H", raw, q)
        out.append(raw[q + 2:q + 2 + length])
        q += 2 + length
    assert out == day and manifest.messages == len(day) and manifest.frames == 0
    zipped = tmp_path / "day.itch.gz"
    write_feed(zipped, SPEC, fmt="dayfile", gzip=True)
    assert gzip.decompress(zipped.read_bytes()) == raw
    for impairment in (dict(ab=True), dict(gaps=1), dict(malformed=1)):
        with pytest.raises(UserError):
            write_feed(tmp_path / "no.itch", FeedSpec(**impairment), fmt="dayfile")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")
def test_tshark_reads_the_moldudp64_framing(tmp_path):
    path = tmp_path / "ab.pcap"
    manifest = write_feed(path, FeedSpec(seed=5, messages=5000, instruments=40, ab=True, gaps=2, gaps_on="both",
                                         heartbeat_every_ns=QUIET))
    proc = subprocess.run(["tshark", "-n", "-r", str(path), "-d", f"udp.port=={PORT},moldudp64", "-T", "fields",
                           "-e", "moldudp64.session", "-e", "moldudp64.sequence", "-e", "moldudp64.count"],
                          capture_output=True, text=True, check=True)
    theirs = [tuple(line.split("\t")) for line in proc.stdout.splitlines()]
    ours = []
    for f in rdpcap(str(path)):
        session, seq, count, _ = mold_blocks(feed_datagram(bytes(f), f.wirelen)[1])
        ours.append((session, str(seq), str(count)))
    assert theirs == ours and len(ours) == manifest.frames


def test_committed_sample_equals_a_fresh_regeneration(tmp_path):
    fresh = tmp_path / "sample.pcap"
    manifest = write_feed(fresh, preset("sample"))
    assert SAMPLE.read_bytes() == fresh.read_bytes()
    assert SAMPLE.stat().st_size < 2_000_000 and 20_000 <= manifest.messages <= 30_000
    assert len(manifest.gaps) == 1 and manifest.dropped_lines.count("A") == 2
    assert manifest.expected_bad_packets == manifest.expected_frame_drops == 6 and manifest.heartbeats > 0


# -- the command line and the spec --------------------------------------------------------------------
def test_cli_writes_and_summarises(tmp_path, capsys):
    out = tmp_path / "sub" / "feed.pcapng"
    assert main(["generate", str(out), "--messages", "3000", "--instruments", "25", "--ab", "--gaps", "1"]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a" and text.startswith(f"Wrote {out}: pcapng")
    assert "3,000 ITCH 5.0 messages" in text and "a correct decoder reports gaps: none" in text


@pytest.mark.parametrize("argv", [["--messages", "30", "--instruments", "40"], ["--vlan", "5000"],
                                  ["--format", "dayfile", "--ab"], ["--format", "dayfile", "--vlan", "3"],
                                  ["--format", "pcapng", "--microseconds"]])
def test_cli_refuses_bad_options_in_one_sentence(tmp_path, capsys, argv):
    assert main(["generate", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("appliance: ") and err.count("\n") == 0 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("field,value", [("session", "SHORT"), ("gaps_on", "B"), ("start_seq", 0),
                                         ("max_payload", 50), ("line_a", "10.0.0.1:26400"), ("instruments", 0)])
def test_bad_specs_are_user_errors(tmp_path, field, value):
    with pytest.raises(UserError):
        write_feed(tmp_path / "x.pcap", FeedSpec(**{field: value}))


def test_compiled_kernels_and_the_interpreter_write_the_same_bytes(tmp_path):
    """numba's integer semantics (wrapping, promotion) against plain Python running the same kernels."""
    kw = dict(messages=3000, instruments=20, ab=True, gaps=1, malformed=11, vlan=3, ip_options=True)
    compiled, interpreted = tmp_path / "jit.pcap", tmp_path / "nojit.pcap"
    write_feed(compiled, FeedSpec(**kw))
    code = f"from appliance.gen import FeedSpec, write_feed; write_feed({str(interpreted)!r}, FeedSpec(**{kw!r}))"
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, check=True, cwd=ROOT)
    assert compiled.read_bytes() == interpreted.read_bytes()
