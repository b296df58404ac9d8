"""TPACKET_V2 (``--engine tpacket --tpacket-version 2``): a frame slot per frame, each handed over as it lands.

Unprivileged: the kernel ``tpacket2_rx`` over a ring laid out in memory as the kernel lays it out (slot order,
wrap-around, a malformed slot, the budget, a frame left on its slot, the VLAN tag put back in the recording, the
capture timestamp), and the command line's refusals.  In a lab namespace: ``validate`` passes with V2, a full V2
ring counts every frame as read or as a tp_drop, and the filter and the VLAN reinsertion hold on a real ring.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess

import numpy as np
import pytest

from conftest import module_lab
from test_capture import REPO, SAMPLE, _appliance
from test_capture import _in_lab as run_in_lab

from appliance.ring import tpacket2_rx as v2

GROUP, PORT = 0xE9360C01, 26400
BLOCK, FRAME = 4096, 2048
MAC_AT = 66                     # where the kernel puts the frame in a slot (ring.tpacket.V2_MAC_OFFSET)


def _frame(seq: int) -> bytes:
    """An Ethernet/IPv4/UDP datagram to the feed carrying an (empty) MoldUDP64 heartbeat."""
    mold = b"SESSION001" + struct.pack(">QH", seq, 0)
    udp = struct.pack(">HHHH", 1234, PORT, 8 + len(mold), 0) + mold
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 1, 17, 0, bytes([10, 250, 0, 2]),
                     GROUP.to_bytes(4, "big"))
    return bytes.fromhex("01005e360c01020000000001") + b"\x08\x00" + ip + udp


def _put(ring: np.ndarray, slot: int, data: bytes, status: int = v2.TP_STATUS_USER, sec: int = 0, nsec: int = 0,
         tci: int = 0, tpid: int = 0, mac: int = MAC_AT) -> None:
    """Write ``struct tpacket2_hdr`` and the frame into ``slot`` as tpacket_rcv does."""
    base = (slot // (BLOCK // FRAME)) * BLOCK + (slot % (BLOCK // FRAME)) * FRAME
    hdr = struct.pack("=IIIHHIIHH4x", status, len(data), len(data), mac, mac + 14, sec, nsec, tci, tpid)
    ring[base:base + len(hdr)] = np.frombuffer(hdr, np.uint8)
    ring[base + mac:base + mac + len(data)] = np.frombuffer(data, np.uint8)


def _status(ring: np.ndarray, slot: int) -> int:
    base = (slot // (BLOCK // FRAME)) * BLOCK + (slot % (BLOCK // FRAME)) * FRAME
    return int(ring[base:base + 4].view(np.uint32)[0])


class Ring:
    """Two 4 KiB blocks of two 2 KiB slots, a decoder and the capture state, recording into 64 KiB."""

    def __init__(self):
        from appliance.replay.decoder import Decoder, Options
        from appliance.ring.atomics import no_wait
        from appliance.ring.deliver import REC_META_SIZE, new_rx_state, recording_on

        self.ring = np.zeros(2 * BLOCK, np.uint8)
        self.geom = np.zeros(v2.G2_SIZE, np.int64)
        self.geom[[v2.G2_BLOCK_SIZE, v2.G2_PER_BLOCK, v2.G2_FRAME_SIZE, v2.G2_FRAMES]] = BLOCK, 2, FRAME, 4
        self.dec = Decoder(Options(feeds=[(GROUP, PORT)], order_capacity=64, level_pool=64), sink=None)
        self.rec = np.zeros(1 << 16, np.uint8)
        self.rec_meta = np.zeros(REC_META_SIZE, np.int64)
        self.state = recording_on(new_rx_state(self.dec.state), self.rec, self.rec_meta, 65535)
        self.cap, self.hist, self.ts = self.state.cap, self.state.hist, self.state.ts
        self.wait, self.pollfds = no_wait([0])

    def receive(self, budget: int = 1 << 20) -> tuple[int, int]:
        status, n = v2.tpacket2_rx(self.ring, self.ring.view(np.uint32), self.geom, budget, self.wait, self.pollfds,
                                   self.state)
        return int(status), int(n)

    def records(self) -> list[tuple[int, int, bytes]]:
        """(ts_sec, ts_nsec, frame) of each pcap record in the frame ring, from its tail to its head (wrapping)."""
        from appliance.cold.recording import pieces
        from appliance.ring.deliver import REC_HEAD, REC_TAIL

        data = b"".join(p.tobytes() for p in pieces(self.rec, int(self.rec_meta[REC_TAIL]),
                                                     int(self.rec_meta[REC_HEAD])))
        out, p = [], 0
        while p < len(data):
            sec, nsec, incl, _ = struct.unpack_from("<IIII", data, p)
            out.append((sec, nsec, data[p + 16:p + 16 + incl]))
            p += 16 + incl
        return out


def test_kernel_takes_slots_in_order_across_blocks_and_wraps():
    from appliance.ring.deliver import BUDGET, CAP_FRAMES, CAP_RING_MALFORMED, IDLE

    r = Ring()
    for slot in range(4):
        _put(r.ring, slot, _frame(slot + 1), sec=1_700_000_000 + slot, nsec=123_456_789)
    assert r.receive(budget=3) == (BUDGET, 3)
    assert [_status(r.ring, s) for s in range(4)] == [0, 0, 0, v2.TP_STATUS_USER]   # the 4th is still ours
    assert r.receive() == (IDLE, 1)
    assert int(r.geom[v2.G2_NEXT]) == 0                                                # wrapped
    assert [sec for sec, _, _ in r.records()] == [1_700_000_000 + s for s in range(4)]
    assert all(nsec == 123_456_789 for _, nsec, _ in r.records())
    assert [rec for _, _, rec in r.records()] == [_frame(s + 1) for s in range(4)]
    # a slot whose frame would run past its end: counted, given back, the next one taken
    _put(r.ring, 0, _frame(5), mac=FRAME - 20)
    _put(r.ring, 1, _frame(6))
    assert r.receive() == (IDLE, 1)
    assert r.cap[CAP_RING_MALFORMED] == 1 and r.cap[CAP_FRAMES] == 5
    assert _status(r.ring, 0) == _status(r.ring, 1) == 0
    # a slot still the kernel's stops the walk even if a later one is marked: the kernel fills in order
    _put(r.ring, 3, _frame(7))
    assert r.receive() == (IDLE, 0) and int(r.geom[v2.G2_NEXT]) == 2


def test_kernel_puts_the_vlan_tag_back_in_the_recording():
    r = Ring()
    flags = v2.TP_STATUS_USER | v2.TP_STATUS_VLAN_VALID
    _put(r.ring, 0, _frame(1), status=flags, tci=100)                                   # TPID not given: 802.1Q
    _put(r.ring, 1, _frame(2), status=flags | v2.TP_STATUS_VLAN_TPID_VALID, tci=7, tpid=0x88A8)
    _put(r.ring, 2, _frame(3))
    r.receive()
    recs = [rec for _, _, rec in r.records()]
    assert recs[0] == _frame(1)[:12] + bytes.fromhex("81000064") + _frame(1)[12:]
    assert recs[1] == _frame(2)[:12] + bytes.fromhex("88a80007") + _frame(2)[12:]
    assert recs[2] == _frame(3)


def test_a_full_frame_ring_counts_the_frame_as_not_recorded_and_decodes_it():
    """The frame ring never holds the receive ring back: a frame it has no room for is decoded, given back and
    counted as not recorded; a record may straddle the ring's end (the recorder writes the bytes in order)."""
    from appliance.decode import counters as C
    from appliance.ring.deliver import CAP_REC_DROPPED, CAP_REC_FRAMES, IDLE, REC_HEAD, REC_TAIL

    r = Ring()
    size, rec_len = len(r.rec), 16 + len(_frame(1))
    r.rec_meta[REC_HEAD] = r.rec_meta[REC_TAIL] = size - rec_len - 5    # the second record will wrap
    _put(r.ring, 0, _frame(1))
    _put(r.ring, 1, _frame(2))
    assert r.receive() == (IDLE, 2)
    assert int(r.cap[CAP_REC_FRAMES]) == 2 and int(r.cap[CAP_REC_DROPPED]) == 0
    assert [rec for _, _, rec in r.records()] == [_frame(1), _frame(2)]
    r.rec_meta[REC_TAIL] = int(r.rec_meta[REC_HEAD]) - size + rec_len + 3    # room for one more record only
    _put(r.ring, 2, _frame(3))
    _put(r.ring, 3, _frame(4))
    assert r.receive() == (IDLE, 2)
    assert int(r.cap[CAP_REC_FRAMES]) == 3 and int(r.cap[CAP_REC_DROPPED]) == 1
    assert int(r.dec.cnt[C.FRAMES]) == 4                                    # every frame decoded
    assert [_status(r.ring, s) for s in range(4)] == [0, 0, 0, 0]           # and every slot given back


@pytest.mark.parametrize("argv, needle", [
    (["--engine", "tpacket", "--tpacket-version", "2", "--retire-ms", "1"], "--retire-ms"),
    (["--tpacket-version", "2"], "--engine tpacket"),
    (["--retire-ms", "1"], "--retire-ms"),
])
def test_tpacket_version_refusals_are_one_sentence(argv, needle, tmp_path):
    done = subprocess.run(_appliance("capture", "--iface", "lo", "--feed", "233.54.12.1:26400", "--out", "X", *argv),
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- in a lab namespace ----------------------------------------------------------------------------------------
lab = module_lab("appl-tp2")


def _in_lab(lab, code: str) -> dict:
    return run_in_lab(lab, code, timeout=300)


@pytest.mark.root
@pytest.mark.netns
def test_validate_passes_with_tpacket_v2(tmp_path):
    done = subprocess.run(_appliance("validate", str(SAMPLE), "--engine", "tpacket", "--tpacket-version", "2",
                                     "--pps", "20000", "--out", str(tmp_path), "--lab", f"appl-vtp2-{os.getpid()}"),
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("PASS  tpacket")
    live = json.loads((tmp_path / "live" / "summary.json").read_text())
    cap = live["capture"]
    assert cap["tpacket_version"] == 2 and cap["frame_size"] == 2048 and "retire_ms" not in cap
    assert live["messages"] == 19_999 and sum(cap["drops"].values()) == 0
    assert cap["latency"]["samples"] >= live["packets"] and cap["counters"]["ring_blocks"] == 0
    assert (tmp_path / "live" / "bbo.csv").read_bytes() == (tmp_path / "replay" / "bbo.csv").read_bytes()


@pytest.mark.root
@pytest.mark.netns
def test_full_v2_ring_drops_are_counted(lab):
    """Nobody reads a 4-slot V2 ring while 3,000 frames arrive: every frame is either read later or a tp_drop."""
    res = _in_lab(lab, """
        import json, socket, time
        from appliance.capture.engine import Capture, CaptureOptions
        from appliance.ring.tpacket import TpacketRing
        opts = CaptureOptions(iface="lab0", feeds=[(0xE9360C01, 26400)], engine="tpacket", tpacket_version=2)
        cap = Capture(opts)
        frame = bytes.fromhex("01005e360c01" "020000000001" "0800" "4500003c00004000" "0111" "0000" "0afa0002"
                              "e9360c01" "1234" "6720" "0028" "0000") + bytes(32)
        with TpacketRing("lab0", opts.feeds, block_size=4096, blocks=2, version=2) as ring:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("lab1", 0))
            for _ in range(3000):
                s.send(frame)
            time.sleep(0.3)
            got = 0
            for _ in range(20):
                status, n = ring.receive(1 << 20, cap.rx)
                got += n
                time.sleep(0.01)
            stats = ring.stats()
        print(json.dumps(dict(got=got, slots=ring.blocks * (ring.block_size // ring.frame_size), **stats)))
    """)
    assert res["slots"] == 4 and res["got"] == 4, res          # the four frames that found a free slot
    assert res["got"] + res["ring_drops"] == 3000, res
    assert res["kernel_packets"] == 3000


@pytest.mark.root
@pytest.mark.netns
def test_v2_filter_keeps_only_feeds_and_recording_restores_vlan_tags(lab):
    """As for V3 (tests/test_capture.py): the filter passes the feed, tagged or not, and nothing else; the kernel
    moves the VLAN tag into tp_vlan_tci and the recording puts it back where it was."""
    res = _in_lab(lab, """
        import json, socket, struct, time
        import numpy as np
        from appliance.capture.engine import Capture, CaptureOptions
        from appliance.ring.tpacket import TpacketRing
        from appliance.ring.deliver import CAP_FRAMES, CAP_REC_FRAMES, REC_META_SIZE, recorded_bytes, recording_on
        from appliance.decode import counters as C

        def frame(group, port, frag=0, vlan=None):
            udp = struct.pack(">HHHH", 1234, port, 8 + 32, 0) + bytes(32)
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, frag, 1, 17, 0,
                             bytes([10, 250, 0, 2]), group.to_bytes(4, "big"))
            tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
            return bytes.fromhex("01005e360c01020000000001") + tag + b"\\x08\\x00" + ip + udp

        feed = 0xE9360C01
        opts = CaptureOptions(iface="lab0", feeds=[(feed, 26400)], engine="tpacket", tpacket_version=2)
        cap = Capture(opts)
        cap.rx = recording_on(cap.rx, np.zeros(1 << 20, np.uint8), np.zeros(REC_META_SIZE, np.int64), 65535)
        with TpacketRing("lab0", opts.feeds, block_size=1 << 16, blocks=4, version=2) as ring:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("lab1", 0))
            for f in [frame(feed, 26400), frame(feed + 1, 26400), frame(feed, 26401), frame(feed, 26400, frag=1),
                      frame(feed, 26400, vlan=100)] * 5:
                s.send(f)
            time.sleep(0.3)
            for _ in range(10):
                ring.receive(1 << 20, cap.rx)
                time.sleep(0.01)
        rec = recorded_bytes(cap.rx)
        used, tagged, p = len(rec), 0, 0
        while p < used:
            incl = int.from_bytes(rec[p + 8:p + 12].tobytes(), "little")
            body = rec[p + 16:p + 16 + incl].tobytes()
            tagged += body[12:16] == bytes.fromhex("81000064")
            p += 16 + incl
        print(json.dumps(dict(frames=int(cap.cap[CAP_FRAMES]), recorded=int(cap.cap[CAP_REC_FRAMES]),
                              tagged=tagged, decoded=int(cap.decoder.cnt[C.FRAMES]))))
    """)
    assert res == {"frames": 10, "recorded": 10, "tagged": 5, "decoded": 10}
