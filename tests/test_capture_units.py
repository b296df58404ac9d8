"""Capture pieces that need no privileges: the latency histogram, the TPACKET feed filter's shape, the
worker command line, the capture command's refusals."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from appliance.capture.stats import latency
from appliance.capture.workers import worker_argv
from appliance.ring.deliver import CAP_LAT_MAX, CAP_SIZE, HIST_SIZE, bucket_floor
from appliance.ring.tpacket import feed_filter


def _bucket(ns: int) -> int:
    from appliance.ring.deliver import _bucket as kernel_bucket
    return int(kernel_bucket(np.int64(ns)))


def test_histogram_buckets_are_monotonic_and_tight():
    prev = -1
    for ns in list(range(0, 5000)) + [10**k + d for k in range(4, 12) for d in (-1, 0, 1, 12345)]:
        b = _bucket(ns)
        assert b >= prev or ns < 5000 and b == prev
        prev = max(prev, b)
        if b < HIST_SIZE - 1:
            lo, hi = bucket_floor(b), bucket_floor(b + 1)
            assert lo <= ns < hi
            assert (hi - lo) <= max(1, lo // 64)          # within 1/64 (1.6%)


def test_latency_percentiles():
    hist = np.zeros(HIST_SIZE, np.int64)
    cap = np.zeros(CAP_SIZE, np.int64)
    values = [1_000] * 980 + [50_000] * 18 + [2_000_000] * 2
    for v in values:
        hist[_bucket(v)] += 1
    cap[CAP_LAT_MAX] = max(values)
    out = latency(hist, cap)
    assert out["samples"] == 1000
    assert 1_000 <= out["p50_ns"] <= 1_016
    assert 50_000 <= out["p99_ns"] <= 50_800
    assert out["p99_9_ns"] == out["max_ns"] == 2_000_000            # capped at the exact maximum


def test_feed_filter_jumps_resolve():
    prog = feed_filter([(0xE9360C01, 26400), (0xE9360C02, 26400), (0xE9360C03, 26401)])
    assert prog[-1] == (0x06, 0, 0, 0)
    for pc, (op, jt, jf, k) in enumerate(prog):
        if op == 0x05:                                           # ja: forward by k
            assert pc + 1 + k < len(prog)
        elif op & 0x07 == 0x05:                                  # conditional jumps
            assert pc + 1 + jt < len(prog) and pc + 1 + jf < len(prog)
    assert prog.count((0x06, 0, 0, 0x40000)) == 3                # one accepting return per feed
    assert len(feed_filter([(0xE9360C01, p) for p in range(256)])) <= 4096


def test_worker_argv_drops_parent_options():
    argv = ["--iface", "lab0", "--workers", "2", "--out", "X", "--feed", "233.54.12.1:26400", "--fanout=hash",
            "--engine", "tpacket"]
    assert worker_argv(argv) == ["--iface", "lab0", "--feed", "233.54.12.1:26400", "--engine", "tpacket"]


@pytest.mark.parametrize("argv, needle", [
    (["--iface", "no-such-if0", "--feed", "233.54.12.1:26400", "--out", "X"], "does not exist"),
    (["--iface", "lo", "--feed", "10.0.0.1:26400", "--out", "X"], "multicast"),
    (["--iface", "lo", "--feed", "233.54.12.1:26400", "--out", "X", "--workers", "2"], "--engine tpacket"),
    (["--iface", "lo", "--feed", "233.54.12.1:26400", "--out", "X", "--engine", "tpacket", "--fanout", "hash"],
     "--fanout-group"),
    (["--iface", "lo", "--feed", "233.54.12.1:26400", "--out", "X", "--frames", "1000"], "power of two"),
])
def test_capture_refusals_are_one_sentence(argv, needle, tmp_path):
    done = subprocess.run([sys.executable, "-m", "appliance", "capture", *argv], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_status_line_shows_rates_drops_and_gaps():
    import io
    import time as _time
    from types import SimpleNamespace

    from appliance.capture.stats import status_line

    stream = io.StringIO()
    show = status_line(stream)
    fake = SimpleNamespace(counters=lambda: {"frames": 50_000, "packets": 50_000, "messages": 1_000_000,
                                             "gaps": 2},
                           rings=[], cap=np.zeros(CAP_SIZE, np.int64))
    _time.sleep(0.55)
    show(fake)
    line = stream.getvalue()
    assert line.startswith("\r") and "pkt/s" in line and "msg/s" in line
    assert "drops 0" in line and "gaps 2" in line and "frames 50,000" in line


def test_prefault_keeps_every_value():
    from appliance.capture.warm import prefault
    from appliance.replay.decoder import Decoder, Options

    dec = Decoder(Options(order_capacity=1 << 16, level_pool=1 << 16), None)
    dec.book.sym[7] = np.frombuffer(b"ABCDEFGH", np.uint8)
    dec.book.lv[12345] = (777, 888)
    tables = dec.tables()
    assert {type(t).__name__ for t in tables} == {"Book", "Mold", "Out", "Vwap"}
    before = {(i, f): getattr(t, f).copy() for i, t in enumerate(tables) for f in t._fields}
    touched = prefault(dec)
    assert touched >= dec.book.lv.nbytes + dec.book.ot.nbytes
    for (i, f), old in before.items():
        assert np.array_equal(getattr(tables[i], f), old), (type(tables[i]).__name__, f)


def test_validate_compare_reports_differences_and_drops(tmp_path):
    from appliance.capture.validate import compare, drop_lines

    (tmp_path / "r").mkdir()
    (tmp_path / "l").mkdir()
    for d in ("r", "l"):
        (tmp_path / d / "trades.csv").write_text("t\n1\n")
        (tmp_path / d / "vwap.csv").write_text("v\n")
    (tmp_path / "r" / "bbo.csv").write_text("b\n1\n2\n")
    (tmp_path / "l" / "bbo.csv").write_text("b\n1\n")
    replay = {"packets": 10, "messages": 40, "gaps": [], "messages_by_type": {"A": 30, "D": 10},
              "symbols": {"ABC": {"volume": 100, "bid_price": 5}}}
    live = {"packets": 9, "messages": 36, "gaps": [["S1", 7, 7]], "messages_by_type": {"A": 27, "D": 9},
            "symbols": {"ABC": {"volume": 90, "bid_price": 5}},
            "capture": {"drops": {"kernel": 1, "xdp": 0, "socket": 1}, "xdp_counters": {"redirect": 9}}}
    diffs = compare(replay, live, tmp_path / "r", tmp_path / "l")
    text = "\n".join(diffs)
    assert "packets" in text and "replay 10 vs live 9" in text
    assert "A: 30 vs 27" in text and "gaps" in text
    assert "symbol ABC" in text and "volume 100 vs 90" in text and "bid_price" not in text
    assert "bbo.csv" in text and "trades.csv" not in text and "vwap.csv" not in text
    assert drop_lines(live)[0] == "drops by source: kernel 1, xdp 0, socket 1"
    assert compare(replay, replay, tmp_path / "r", tmp_path / "r") == []


def test_default_umem_stays_within_budget():
    from appliance.capture.engine import UMEM_BUDGET, umem_frames

    for queues in range(1, 65):
        frames = umem_frames(queues)
        assert frames & (frames - 1) == 0 and 2048 <= frames <= 16384
        assert frames * 4096 * queues <= max(UMEM_BUDGET, 2048 * 4096 * queues)
    assert umem_frames(1) == umem_frames(4) == 16384


def test_constants_the_ring_kernels_restate_match_their_sources():
    """Ring kernels keep their own copies of the XDP program's layout (the kernel cache is keyed on kernel
    sources only): check them.  The pcap record header the kernel writes is the recorder's (both from
    appliance.pcap)."""
    from appliance import pcap
    from appliance.capture import record
    from appliance.ring import deliver, steer, xsk_rx

    assert deliver.REC_HEADER == record.RECORD_HEADER == pcap.PCAP_RECORD_HEADER == 16
    assert record.FILE_HEADER_STRUCT.size == pcap.PCAP_FILE_HEADER == 24
    assert record.INCL_LEN == pcap.PCAP_INCL_LEN_AT == 8 and pcap.PCAP_ORIG_LEN_AT == 12
    assert xsk_rx.META_SIZE == steer.META_SIZE == steer.STEER_META.itemsize
    assert xsk_rx.META_MAGIC_AT == steer.STEER_META.fields["magic"][1]


def test_tpacket_offsets_match_the_kernel_structs_laid_out_by_c_rules():
    """The offsets tpacket_rx reads at are those of if_packet.h's structs, laid out here by ctypes."""
    import ctypes as c

    from appliance.ring import tpacket_rx as T

    class HdrV1(c.Structure):            # struct tpacket_hdr_v1 (ts_first_pkt / ts_last_pkt left out: not read)
        _fields_ = [("block_status", c.c_uint32), ("num_pkts", c.c_uint32), ("offset_to_first_pkt", c.c_uint32),
                    ("blk_len", c.c_uint32), ("seq_num", c.c_uint64)]

    class BlockDesc(c.Structure):        # struct tpacket_block_desc
        _fields_ = [("version", c.c_uint32), ("offset_to_priv", c.c_uint32), ("hdr", HdrV1)]

    class Variant1(c.Structure):         # struct tpacket_hdr_variant1
        _fields_ = [("tp_rxhash", c.c_uint32), ("tp_vlan_tci", c.c_uint32), ("tp_vlan_tpid", c.c_uint16),
                    ("tp_padding", c.c_uint16)]

    class Hdr3(c.Structure):             # struct tpacket3_hdr
        _fields_ = [("tp_next_offset", c.c_uint32), ("tp_sec", c.c_uint32), ("tp_nsec", c.c_uint32),
                    ("tp_snaplen", c.c_uint32), ("tp_len", c.c_uint32), ("tp_status", c.c_uint32),
                    ("tp_mac", c.c_uint16), ("tp_net", c.c_uint16), ("hv1", Variant1), ("tp_padding", c.c_uint8 * 8)]

    hdr = BlockDesc.hdr.offset
    assert (T.OFF_BLOCK_STATUS, T.OFF_NUM_PKTS, T.OFF_FIRST_PKT) == \
        (hdr + HdrV1.block_status.offset, hdr + HdrV1.num_pkts.offset, hdr + HdrV1.offset_to_first_pkt.offset)
    for name in ("tp_next_offset", "tp_sec", "tp_nsec", "tp_snaplen", "tp_len", "tp_status", "tp_mac"):
        assert getattr(T, "OFF_" + name.upper()) == getattr(Hdr3, name).offset, name
    assert T.OFF_TP_VLAN_TCI == Hdr3.hv1.offset + Variant1.tp_vlan_tci.offset
    assert T.OFF_TP_VLAN_TPID == Hdr3.hv1.offset + Variant1.tp_vlan_tpid.offset
    assert T.HDR3 >= c.sizeof(Hdr3)


def test_every_constant_a_kernel_imports_is_in_the_kernel_cache_key():
    """A kernel freezes the integers it imports into its machine code, and the cache directory is named by a
    hash of ``KERNEL_SOURCES`` only: a module a kernel source takes integers from must be one of them, or an
    edit there would leave stale code in the cache."""
    import ast
    import importlib
    from pathlib import Path

    from appliance import _jit

    root = Path(_jit.__file__).parent
    covered = set()
    for entry in _jit.KERNEL_SOURCES:
        path = root / entry
        covered |= set(path.rglob("*.py")) if path.is_dir() else {path}
    def module_file(parts):
        base = root.joinpath(*parts)
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")

    for path in covered:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "appliance"):
                continue
            parts = node.module.split(".")[1:]
            module = importlib.import_module(node.module)
            for alias in node.names:
                if module_file(parts + [alias.name]).exists():       # a whole module: its integers are used
                    source, takes_ints = module_file(parts + [alias.name]), True
                else:
                    source, takes_ints = module_file(parts), isinstance(getattr(module, alias.name), int)
                assert not takes_ints or source in covered, \
                    f"{path.relative_to(root)} takes {alias.name} from {node.module}, not in KERNEL_SOURCES"


def _udp_frame(group: int, port: int, tags: tuple[int, ...] = (), ihl: int = 5) -> bytes:
    import struct

    eth = bytes(12) + b"".join(struct.pack(">HH", tpid, 7) for tpid in tags) + struct.pack(">H", 0x0800)
    ip = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + 8, 0, 0, 64, 17, 0, bytes(4), group.to_bytes(4, "big"))
    return eth + ip + bytes(4 * (ihl - 5)) + struct.pack(">HHHH", 1234, port, 8, 0)


def test_watch_reads_group_and_port_through_tags_and_options_and_refuses_short_frames():
    from appliance.capture.watch import group_port

    frame = _udp_frame(0xE9360C09, 26401, tags=(0x88A8, 0x8100), ihl=7)
    assert group_port(frame) == (0xE9360C09, 26401)
    for cut in range(len(frame) - 4):                            # cut before the port's end: None, no exception
        assert group_port(frame[:cut]) is None
    assert group_port(_udp_frame(0xE9360C09, 1, tags=(0x8100,) * 5)) is None      # more tags than the policy


def test_watch_counts_at_most_max_lines_one_by_one():
    from appliance.capture.watch import MAX_LINES, MulticastWatch

    watch = MulticastWatch("lo")
    for port in range(MAX_LINES + 10):
        watch.count((0xE9360C01, port))
    watch.count((0xE9360C01, 0))
    res = watch.result()
    assert len(res["lines"]) == MAX_LINES and res["other_frames"] == 10
    assert res["lines"][0] == {"group": "233.54.12.1", "port": 0, "frames": 2}


def test_no_feed_sentence_and_merge():
    from appliance.capture.watch import merge, no_feed_sentence

    a = {"lines": [{"group": "233.54.12.1", "port": 26400, "frames": 5}], "other_frames": 0, "seconds": 2.0}
    b = {"lines": [{"group": "233.54.12.1", "port": 26400, "frames": 7},
                   {"group": "233.54.12.2", "port": 26400, "frames": 1}], "other_frames": 0, "seconds": 2.5}
    merged = merge([a, b])                          # two workers watched the same interface: max, not sum
    assert merged["lines"][0]["frames"] == 7 and len(merged["lines"]) == 2 and merged["seconds"] == 2.5
    text = no_feed_sentence(["233.54.12.9:26400"], "lab0", merged, fanout=False)
    assert "233.54.12.1:26400 (7 frames), 233.54.12.2:26400 (1 frames)" in text and "check --feed" in text
    none = no_feed_sentence(["233.54.12.9:26400"], "lab0", {"lines": [], "other_frames": 0, "seconds": 1}, False)
    assert "no IPv4 UDP multicast arrived there at all" in none


def test_multicast_filter_keeps_multicast_outside_the_local_block():
    """Run the classic BPF program with a small interpreter of the opcodes it uses."""
    from appliance.ring.tpacket import multicast_filter

    prog = multicast_filter(128)
    assert run_cbpf(prog, _udp_frame(0xE9360C09, 26400)) == 128
    assert run_cbpf(prog, _udp_frame(0xE9360C09, 26400, tags=(0x8100,))) == 128
    assert run_cbpf(prog, _udp_frame(0xE00000FB, 5353)) == 0          # 224.0.0.251 (mDNS): link-local block
    assert run_cbpf(prog, _udp_frame(0x0A000001, 26400)) == 0          # unicast
    assert run_cbpf(prog, _udp_frame(0xEFFFFFFA, 1900)) == 128         # 239.255.255.250 is outside 224.0.0.0/24
    feed = feed_filter([(0xE9360C09, 26400)])                          # the interpreter agrees with the kernel's
    assert run_cbpf(feed, _udp_frame(0xE9360C09, 26400)) == 0x40000    # verdicts (tests/test_frame_policy.py)
    assert run_cbpf(feed, _udp_frame(0xE9360C09, 26401)) == 0


def test_spread_warnings():
    from appliance.capture.workers import spread_warnings

    one = [{"worker": 0, "frames": 9, "lines": ["233.54.12.1:26400", "233.54.12.2:26400"]},
           {"worker": 1, "frames": 0, "lines": []}]
    (text,) = spread_warnings(one)
    assert text.startswith("every line went to worker 0 (233.54.12.1:26400, 233.54.12.2:26400)")
    split = [{"worker": 0, "frames": 9, "lines": ["233.54.12.1:26400"]},
             {"worker": 1, "frames": 9, "lines": ["233.54.12.1:26400", "233.54.12.2:26400"]}]
    (text,) = spread_warnings(split)
    assert text.startswith("line 233.54.12.1:26400 was split across workers 0, 1")
    fine = [{"worker": 0, "frames": 9, "lines": ["233.54.12.1:26400"]},
            {"worker": 1, "frames": 9, "lines": ["233.54.12.2:26400"]}]
    assert spread_warnings(fine) == []


def test_validate_differences_escape_wire_strings(tmp_path):
    from appliance.capture.validate import compare

    replay = {"gaps": [["\x1b]0;owned\x07", 1, 2]], "symbols": {"EV\x1b[2JIL": {"volume": 1}}}
    live = {"gaps": [], "symbols": {"EV\x1b[2JIL": {"volume": 2}}}
    lines = compare(replay, live, tmp_path, tmp_path)
    assert lines and not any(ch in "".join(lines) for ch in "\x1b\x07")
    assert any("symbol EV\\x1b[2JIL" in line for line in lines)


def run_cbpf(prog: list[tuple[int, int, int, int]], pkt: bytes, vlan_stripped: int = 0) -> int:
    """A classic BPF interpreter for the opcodes the capture's filters use; a load past the end returns 0, as in
    the kernel."""
    from appliance.ring.tpacket import SKF_AD_VLAN_TAG_PRESENT

    a = x = pc = 0
    mem = [0] * 16
    size = {0x00: 4, 0x08: 2, 0x10: 1}
    while True:
        op, jt, jf, k = prog[pc]
        pc += 1
        cls = op & 0x07
        if cls == 0x00:                                          # BPF_LD
            mode = op & 0xE0
            if mode == 0x80:
                a = len(pkt)
            elif mode == 0x60:
                a = mem[k]
            elif mode == 0x20 and k == SKF_AD_VLAN_TAG_PRESENT:
                a = vlan_stripped
            else:
                off, n = (k if mode == 0x20 else x + k), size[op & 0x18]
                if off + n > len(pkt):
                    return 0
                a = int.from_bytes(pkt[off:off + n], "big")
        elif cls == 0x01:                                        # BPF_LDX
            x = k if op & 0xE0 == 0x00 else mem[k]
        elif cls == 0x02:
            mem[k] = a
        elif cls == 0x03:
            mem[k] = x
        elif cls == 0x04:                                        # BPF_ALU
            b = x if op & 0x08 else k
            a = {0x00: a + b, 0x50: a & b, 0x60: a << b, 0x70: a >> b}[op & 0xF0] & 0xFFFFFFFF
        elif cls == 0x05:                                        # BPF_JMP
            if op == 0x05:
                pc += k
                continue
            b = x if op & 0x08 else k
            hit = {0x10: a == b, 0x20: a > b, 0x30: a >= b, 0x40: bool(a & b)}[op & 0xF0]
            pc += jt if hit else jf
        elif cls == 0x06:
            return k
        elif cls == 0x07:                                        # BPF_MISC: TAX
            x = a


def _placement(**given):
    import argparse

    args = dict(hot_cpu=None, output_cpus=None, hot_rt=None)
    args.update(given)
    return argparse.Namespace(**args)


def test_placement_options_are_checked_in_one_sentence(tmp_path):
    import os

    from appliance.commands.capture import check_placement
    from appliance.errors import UserError

    allowed = sorted(os.sched_getaffinity(0))
    with pytest.raises(UserError, match="--hot-cpu 4096 is not a CPU this process may run on"):
        check_placement(_placement(hot_cpu=4096))
    with pytest.raises(UserError, match="must not include --hot-cpu"):
        check_placement(_placement(hot_cpu=allowed[0], output_cpus=[allowed[0]]))
    with pytest.raises(UserError, match="not within the CPUs"):
        check_placement(_placement(output_cpus=[4096]))
    with pytest.raises(UserError, match="from 1 to 99"):
        check_placement(_placement(hot_rt=0))
    proc = tmp_path / "proc"
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "sys" / "kernel" / "sched_rt_runtime_us").write_text("-1\n")
    with pytest.raises(UserError, match="RT throttling"):
        check_placement(_placement(hot_rt=10), proc=str(proc))
    (proc / "sys" / "kernel" / "sched_rt_runtime_us").write_text("950000\n")
    with pytest.raises(UserError, match="does not go with --idle spin"):
        check_placement(_placement(hot_rt=10, idle="spin"), proc=str(proc))
    check_placement(_placement(hot_cpu=allowed[-1], hot_rt=10, idle="poll"), proc=str(proc))
