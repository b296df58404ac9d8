"""`appliance replay` at its edges: operator errors, capacities that fill, packets.csv, progress of outputs."""
from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys

import pytest

from appliance.cli import main
from reference import build as b

APPLIANCE = [sys.executable, "-m", "appliance"]


def run_cli(*args):
    return subprocess.run(APPLIANCE + [str(a) for a in args], capture_output=True, text=True)


def replay(tmp_path, data: bytes, *extra, name="in.bin"):
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    assert main(["replay", str(path), "--out", str(out), "-q", *map(str, extra)]) == 0
    return json.loads((out / "summary.json").read_text()), out


def rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


# -- operator errors: one sentence on stderr, non-zero exit, no traceback ---------------------------------
@pytest.mark.parametrize("args, code, words", [
    (["replay", "/nonexistent/x.pcap", "--out", "{tmp}/o"], 3, "does not exist"),
    (["replay", "{tmp}/junk.bin", "--out", "{tmp}/o"], 3, "is not a pcap, pcapng or NASDAQ ITCH 5.0 day file"),
    (["replay", "{tmp}/empty.bin", "--out", "{tmp}/o"], 3, "is empty"),
    (["replay", "{tmp}/day.bin", "--out", "/proc/version/o"], 2, "cannot write to output directory"),
    (["replay", "{tmp}/day.bin", "--out", "{tmp}/o", "--feed", "10.0.0.1:5"], 2, "multicast group"),
    (["replay", "{tmp}/day.bin", "--out", "{tmp}/o", "--feed", "nonsense"], 2, "GROUP:PORT"),
    (["replay", "{tmp}/day.bin", "--out", "{tmp}/o", "--vwap-window-ms", "250", "--vwap-step-ms", "100"], 2,
     "whole multiple"),
    (["replay", "{tmp}/day.bin"], 2, "--out"),
    (["replay", "{tmp}", "--out", "{tmp}/o"], 3, "is a directory"),
    (["frobnicate"], 2, "unknown command"),
])
def test_operator_errors_are_one_sentence(tmp_path, args, code, words):
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01hello, this is not a capture")
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "day.bin").write_bytes(b.dayfile_bytes([b.system_event("O")]))
    proc = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == code, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2


def test_damaged_gzip_keeps_what_was_decoded(tmp_path):
    """A gzip stream cut part-way: the messages before the cut stand; the damage is reported, exit 4."""
    messages = [b.directory(1, "AAA")] + [b.add(i, "B", 100, 10_000 + i, ts=i) for i in range(1, 20_001)]
    whole = gzip.compress(b.dayfile_bytes(messages))
    path = tmp_path / "cut.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    out = tmp_path / "o"
    proc = run_cli("replay", path, "--out", out, "-q")
    assert proc.returncode == 4, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_errors"]
    assert 0 < summary["messages"] <= len(messages)
    assert summary["open_orders"] == summary["messages"] - 1


# -- capacities: filled, counted, never silent ----------------------------------------------------------
def test_order_table_full_refuses_and_counts(tmp_path):
    adds = [b.add(ref, "B", 100, 10_000 + ref) for ref in range(1, 201)]
    deletes = [b.delete(ref) for ref in range(1, 201)]
    summary, _ = replay(tmp_path, b.dayfile_bytes([b.directory(1, "AAA")] + adds + deletes),
                        "--order-capacity", 50)
    assert summary["counters"]["order_table_full"] == 150
    assert summary["rejected_adds"] == 150
    assert summary["unknown_order_refs"] == 150      # the refused orders' deletes
    assert summary["open_orders"] == 0
    assert summary["symbols"]["AAA"]["bid_size"] == 0


def test_level_pool_full_is_counted_and_book_stays_sane(tmp_path):
    # 8 levels fit in the first segment; a 9th price needs a 16-level segment the 10-level pool lacks.
    adds = [b.add(ref, "S", 10, 20_000 + ref) for ref in range(1, 10)]
    summary, _ = replay(tmp_path, b.dayfile_bytes([b.directory(1, "AAA")] + adds + [b.delete(1)]),
                        "--level-pool", 10)
    assert summary["counters"]["level_pool_full"] == 1
    assert summary["symbols"]["AAA"]["ask_price"] == 20_002     # best after deleting ref 1 at 20_001
    assert summary["open_orders"] == 8


def test_output_buffers_refill_without_losing_rows(tmp_path):
    """More rows than one output buffer holds: every row arrives, in order."""
    n = 70_000
    messages = [b.directory(1, "AAA")] + [b.add(i, "B", 1, 10_000 + i, ts=i) for i in range(1, n + 1)]
    _, out = replay(tmp_path, b.dayfile_bytes(messages))
    got = rows(out / "bbo.csv")
    assert len(got) == n
    assert [int(r["bid_price"]) for r in got] == [10_000 + i for i in range(1, n + 1)]


def test_packets_csv_lists_every_packet_with_its_fate(tmp_path):
    frames = [b.udp_frame(b.mold(1, [b.directory(1, "AAA")])),
              b.udp_frame(b.mold(2, [b.add(1, "B", 100, 10_000)])),
              b.udp_frame(b.mold(2, [b.add(1, "B", 100, 10_000)]), group=b.GROUP_B),
              b.udp_frame(b.mold(4, [b.delete(1)])),
              b.udp_frame(b"\x01\x02short"),
              b.udp_frame(b.heartbeat(5)),
              b.udp_frame(b.end_of_session(5))]
    summary, out = replay(tmp_path, b.pcap_bytes(frames), "--packets", name="cap.pcap")
    got = [(r["frame"], r["sequence"], r["count"], r["status"]) for r in rows(out / "packets.csv")]
    assert got == [("1", "1", "1", "applied"), ("2", "2", "1", "applied"), ("3", "2", "1", "duplicate"),
                   ("4", "4", "1", "held"), ("5", "", "", "bad"), ("6", "5", "0", "heartbeat"),
                   ("7", "5", "65535", "end_of_session")]
    assert summary["gaps"] == [["TEST000001", 3, 3]]
    assert summary["end_of_session"] == ["TEST000001"]


def test_report_goes_to_stdout(tmp_path):
    path = tmp_path / "day.bin"
    path.write_bytes(b.dayfile_bytes([b.directory(1, "AAA"), b.add(1, "B", 100, 10_000)]))
    proc = run_cli("replay", path, "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert "NASDAQ ITCH 5.0 day file" in proc.stdout
    assert "2 applied" in proc.stdout


def test_help_is_quick_and_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name in ("replay", "generate", "tune"):
        assert name in proc.stdout


@pytest.mark.slow
def test_bounds_checked_kernels_decode_hostile_input_identically(tmp_path):
    """Every kernel recompiled with numba's bounds checking, on hostile input: no index error, same output."""
    cut = b.udp_frame(b.mold(3, [b.add(2, "S", 100, 10_100)]))
    frames = [b.udp_frame(b.mold(1, [b.directory(1, "AAA"), b.add(1, "B", 100, 10_000)])),
              (cut[:40], len(cut)),                                                    # truncated capture
              b.udp_frame(b.mold(3, [b.add(2, "S", 100, 10_100)]), udp_length=400),  # UDP length past the end
              b.udp_frame(b.mold(3, [b.add(2, "S", 100, 10_100)], count=5)),          # count > blocks
              b.udp_frame(b.mold(3, [b"Z" + bytes(18)])),                              # unknown type
              b.udp_frame(b.mold(3, [b""])),                                           # zero-length block
              b.udp_frame(bytes(range(256)) * 3),                                      # garbage
              b.udp_frame(b.mold(3, [b.add(2, "S", 100, 10_100), b.execute(1, 40, 7)])),
              b.udp_frame(b.mold(6, [b.delete(2)]), vlans=(0x88A8, 0x8100), ip_options=b"\x01\x01\x01\x00")]
    data = b.pcap_bytes(frames) + b"\x00\x00\x00"              # and a cut record header at the end
    path = tmp_path / "hostile.pcap"
    path.write_bytes(data)
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    checked = subprocess.run(APPLIANCE + ["replay", str(path), "--out", str(tmp_path / "checked"), "-q"],
                             capture_output=True, text=True, env=env)
    assert checked.returncode == 0, checked.stderr
    assert main(["replay", str(path), "--out", str(tmp_path / "plain"), "-q"]) == 0
    for name in ("summary.json", "bbo.csv", "trades.csv", "vwap.csv"):
        a = (tmp_path / "checked" / name).read_text()
        p = (tmp_path / "plain" / name).read_text()
        if name == "summary.json":
            a, p = json.loads(a), json.loads(p)
            a.pop("elapsed_seconds"), p.pop("elapsed_seconds")
            for volatile in ("inputs", "elapsed_includes_compiling"):
                a.pop(volatile), p.pop(volatile)
        assert a == p, name
    summary = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert summary["bad_packets"] == 4
    assert summary["truncated_frames"] == 1
    assert summary["bad_udp"] == 1
    assert summary["counters"]["truncated_records"] == 1
    assert summary["messages"] == 5
    assert summary["gaps"] == [["TEST000001", 5, 5]]
    assert summary["symbols"]["AAA"] == {
        "locate": 1, "bid_price": 10_000, "bid_size": 60, "ask_price": 0, "ask_size": 0, "volume": 40,
        "notional": 400_000, "trades": 1, "vwap": 10_000.0, "cross_volume": 0}
