"""How `appliance replay` reads hostile inputs: damaged day-file length prefixes, pipes and FIFOs, a file that
shrinks while it is read, and a gzip bomb (issue 8, items 2-5)."""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.cli import main
from reference import build as b

APPLIANCE = [sys.executable, "-m", "appliance"]
MESSAGES = 20_000
CHUNK_MIB = 64               # replay's input buffer (appliance/replay/streams.py CHUNK)


def replay(*args, **kwargs) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run `appliance replay ARGS --out OUT -q`; the process and its summary.json (None when not written)."""
    out = Path(kwargs.pop("out"))
    proc = subprocess.run(APPLIANCE + ["replay", *map(str, args), "--out", str(out), "-q"], capture_output=True,
                          text=True, timeout=300, **kwargs)
    summary = out / "summary.json"
    return proc, json.loads(summary.read_text()) if summary.exists() else None


def record_offsets(raw: bytes) -> list[int]:
    offsets, pos = [], 0
    while pos + 2 <= len(raw):
        offsets.append(pos)
        pos += 2 + int.from_bytes(raw[pos:pos + 2], "big")
    return offsets


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    """A generated day file of 20,000 messages (see README, Generate)."""
    path = tmp_path_factory.mktemp("day") / "day.itch"
    made = subprocess.run(APPLIANCE + ["generate", str(path), "--format", "dayfile", "--messages", str(MESSAGES),
                                       "--seed", "11"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return path


@pytest.fixture(scope="module")
def pcap(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pcap") / "feed.pcap"
    made = subprocess.run(APPLIANCE + ["generate", str(path), "--messages", "5000", "--seed", "12"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return path


# -- item 2: a damaged length prefix costs its record, is reported with its offset, exit 4 -----------------------
def damage(raw: bytes, record: int, how: str, offsets: list[int] | None = None) -> tuple[bytes, int, int]:
    """``raw`` with the length prefix of record number ``record`` damaged; (bytes, its offset, its size).
    ``offsets``: the records' offsets in the undamaged file, when ``raw`` is damaged already."""
    at = (offsets or record_offsets(raw))[record]
    size = 2 + int.from_bytes(raw[at:at + 2], "big")
    out = bytearray(raw)
    if how == "0x0100":
        out[at:at + 2] = b"\x01\x00"
    elif how == "0xFFFF":
        out[at:at + 2] = b"\xff\xff"
    else:                                       # one bit of the low byte flipped
        out[at + 1] ^= 0x10
    return bytes(out), at, size


@pytest.mark.parametrize("how", ["0x0100", "0xFFFF", "bit-flip"])
@pytest.mark.parametrize("record", [0, 1_000, MESSAGES - 2])
def test_damaged_length_prefix_loses_only_its_record(day, tmp_path, how, record):
    raw, at, size = damage(day.read_bytes(), record, how)
    path = tmp_path / "damaged.itch"
    path.write_bytes(raw)
    proc, summary = replay(path, out=tmp_path / "o")
    assert proc.returncode == 4, proc.stderr
    assert summary["messages"] == MESSAGES - 1
    [error] = summary["input_errors"]
    assert f"framing lost at byte {at:,}" in error and f"frame again from byte {at + size:,}" in error
    assert summary["counters"]["framing_lost"] == 1
    assert summary["counters"]["resync_skipped_bytes"] == size
    assert summary["bad_messages"] == 0 and summary["counters"]["truncated_records"] == 0


def test_damaged_prefixes_everywhere_are_each_reported(day, tmp_path):
    raw = day.read_bytes()
    offsets = record_offsets(raw)
    picked = list(range(500, MESSAGES - 100, 1_500))
    for n, record in enumerate(picked):
        raw, _at, _size = damage(raw, record, ["0x0100", "0xFFFF", "bit-flip"][n % 3], offsets)
    path = tmp_path / "many.itch"
    path.write_bytes(raw)
    proc, summary = replay(path, out=tmp_path / "o")
    assert proc.returncode == 4, proc.stderr
    assert summary["messages"] == MESSAGES - len(picked)
    assert summary["counters"]["framing_lost"] == len(picked)
    assert len(summary["input_errors"]) == 10 + 1                # ten listed, then how many more
    assert f"and {len(picked) - 10} more damaged regions" in summary["input_errors"][-1]


def test_zero_length_padding_between_records_is_recognised(day, tmp_path):
    """0x0000 between records (written by some tools): stepped over and counted, not damage."""
    raw = day.read_bytes()
    offsets = record_offsets(raw) + [len(raw)]
    padded = b"".join(raw[a:z] + b"\x00\x00" for a, z in zip(offsets, offsets[1:]))
    path = tmp_path / "padded.itch"
    path.write_bytes(b"\x00\x00" + padded)
    proc, summary = replay(path, out=tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert summary["messages"] == MESSAGES and summary["input_errors"] == []
    assert summary["counters"]["empty_records"] == MESSAGES + 1
    assert summary["counters"]["framing_lost"] == 0


@pytest.mark.parametrize("chunk", [None, 300_001, 300_020, 300_037, 300_100, 300_300])
@pytest.mark.parametrize("compressed", [False, True])
def test_resync_across_chunk_boundaries(day, tmp_path, monkeypatch, chunk, compressed):
    """Damage at and around the first chunk boundary decodes exactly as when the file is one chunk.  (Damage
    within a few records of other damage is one region: records frame again only after SYNC_RECORDS do.)"""
    from appliance.replay import streams

    raw = day.read_bytes()
    offsets = record_offsets(raw)
    near = next(i for i, off in enumerate(offsets) if off >= 300_000 - 60)
    for record, how in ((near, "0xFFFF"), (near + 8, "0x0100"), (near + 16, "bit-flip")):
        raw, _at, _size = damage(raw, record, how, offsets)
    path = b.write(tmp_path / "day", raw, gzip=compressed)
    if chunk:
        monkeypatch.setattr(streams, "CHUNK", chunk)
    assert main(["replay", str(path), "--out", str(tmp_path / "o"), "-q"]) == 4
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["messages"] == MESSAGES - 3
    assert summary["counters"]["framing_lost"] == 3
    assert [re.search(r"framing lost at byte ([\d,]+)", e).group(1) for e in summary["input_errors"]] == \
        [f"{offsets[near + k]:,}" for k in (0, 8, 16)]


def test_small_chunks_decode_a_capture_as_one_buffer(pcap, tmp_path, monkeypatch):
    from appliance.replay import streams

    whole = tmp_path / "whole"
    assert main(["replay", str(pcap), "--out", str(whole), "-q", "--packets"]) == 0
    monkeypatch.setattr(streams, "CHUNK", 300_007)
    small = tmp_path / "small"
    assert main(["replay", str(pcap), "--out", str(small), "-q", "--packets"]) == 0
    drop = ("elapsed_seconds",)
    one, two = (json.loads((d / "summary.json").read_text()) for d in (whole, small))
    assert {k: v for k, v in one.items() if k not in drop} == {k: v for k, v in two.items() if k not in drop}
    for name in ("bbo.csv", "trades.csv", "vwap.csv", "packets.csv"):
        assert (whole / name).read_bytes() == (small / name).read_bytes(), name


def test_first_prefix_damaged_is_still_a_day_file(day, tmp_path):
    raw, _at, size = damage(day.read_bytes(), 0, "0x0100")
    path = tmp_path / "first.itch"
    path.write_bytes(raw)
    proc, summary = replay(path, out=tmp_path / "o")
    assert proc.returncode == 4, proc.stderr
    assert summary["inputs"][0]["format"] == "NASDAQ ITCH 5.0 day file"
    assert summary["messages"] == MESSAGES - 1
    assert "framing lost at byte 0 " in summary["input_errors"][0]


# -- item 3: pipes and FIFOs are streamed; a FIFO nobody writes to says so ----------------------------------------
@pytest.mark.parametrize("compressed", [False, True])
def test_process_substitution_pipe_is_decoded(pcap, tmp_path, compressed):
    feed = b.write(tmp_path / "feed", pcap.read_bytes(), gzip=compressed)
    out = tmp_path / "o"
    command = f"exec {' '.join(APPLIANCE)} replay <(cat {feed}) --out {out} -q"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["messages"] == 5000 and summary["input_errors"] == []


def test_fifo_without_writer_says_it_waits_then_decodes(day, tmp_path):
    fifo = tmp_path / "feed.fifo"
    os.mkfifo(fifo)
    out, err = tmp_path / "o", tmp_path / "stderr"
    with open(err, "w") as err_fh:
        proc = subprocess.Popen(APPLIANCE + ["replay", str(fifo), "--out", str(out), "-q"], stderr=err_fh)
        try:
            deadline = time.monotonic() + 60
            while "waiting for" not in err.read_text() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert "waiting for" in err.read_text() and str(fifo) in err.read_text(), err.read_text()
            assert proc.poll() is None
            with open(fifo, "wb") as writer:
                writer.write(day.read_bytes())
            assert proc.wait(timeout=300) == 0, err.read_text()
        finally:
            proc.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["messages"] == MESSAGES and summary["input_errors"] == []
    assert len(err.read_text().strip().splitlines()) == 1


# -- item 4: a file cut short while replayed is read up to where it ends and reported -----------------------------
def _open_fds(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return found


def test_file_shrinking_during_replay_is_reported_cut_short(day, pcap, tmp_path):
    """Inputs: a FIFO, then a regular file.  Both are opened at detection; the file is cut while replay still
    reads the FIFO, so it is cut after replay learnt its size and before it reads it."""
    fifo, victim = tmp_path / "first.fifo", tmp_path / "second.pcap"
    os.mkfifo(fifo)
    victim.write_bytes(pcap.read_bytes())
    size, keep = victim.stat().st_size, victim.stat().st_size // 2
    out = tmp_path / "o"
    proc = subprocess.Popen(APPLIANCE + ["replay", str(fifo), str(victim), "--out", str(out), "-q"],
                            stderr=subprocess.PIPE, text=True)
    try:
        with open(fifo, "wb") as writer:
            writer.write(day.read_bytes())
            writer.flush()
            deadline = time.monotonic() + 60
            while str(victim) not in _open_fds(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert str(victim) in _open_fds(proc.pid), "replay did not keep the second input open from detection"
            os.truncate(victim, keep)
        _out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 4, err
    summary = json.loads((out / "summary.json").read_text())
    [error] = summary["input_errors"]
    assert f"cut short while it was replayed: it ended at byte {keep:,} of the {size:,}" in error
    assert MESSAGES < summary["messages"] < MESSAGES + 5000


def test_file_cut_between_chunks_keeps_what_was_read(day, tmp_path, monkeypatch):
    """The file shrinks after its first chunk was read (replay reads it in chunks, never maps it)."""
    from appliance.replay import streams

    path = tmp_path / "day.itch"
    path.write_bytes(day.read_bytes())
    keep = 400_000
    monkeypatch.setattr(streams, "CHUNK", 300_000)
    real_fill = streams.fill
    calls = []

    def fill_then_cut(reader, view, filled):
        calls.append(filled)
        if len(calls) == 2:
            os.truncate(path, keep)
        return real_fill(reader, view, filled)

    monkeypatch.setattr(streams, "fill", fill_then_cut)
    out = tmp_path / "o"
    assert main(["replay", str(path), "--out", str(out), "-q"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    raw = day.read_bytes()
    whole = [off for off in record_offsets(raw) if off + 2 + int.from_bytes(raw[off:off + 2], "big") <= keep]
    assert summary["messages"] == len(whole)
    assert f"it ended at byte {keep:,} of the {len(raw):,}" in summary["input_errors"][0]


# -- item 5: a gzip bomb stays within the chunk's memory ----------------------------------------------------------
def _peak_rss_mib(argv: list[str]) -> tuple[int, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def test_gzip_bomb_inflates_in_bounded_memory(day, tmp_path):
    """A valid head then 512 MiB of zeros in 8 gzip members of 64 MiB (0.5 MiB compressed; the old reader took
    2.2 GB for twice that): memory stays within a chunk of a small replay's; the zeros are damage (a run of
    empty records is not padding), reported, exit 4.  (zlib inflates zeros at about 230 MB/s here.)"""
    head = day.read_bytes()[:record_offsets(day.read_bytes())[1000]]
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(head) + zeros * 8)
    assert bomb.stat().st_size < 1 << 20
    small = tmp_path / "small.gz"
    small.write_bytes(gzip.compress(head))
    code, baseline = _peak_rss_mib(APPLIANCE + ["replay", str(small), "--out", str(tmp_path / "s"), "-q"])
    assert code == 0
    started = time.monotonic()
    code, peak = _peak_rss_mib(APPLIANCE + ["replay", str(bomb), "--out", str(tmp_path / "o"), "-q"])
    assert peak < baseline + 2 * CHUNK_MIB, f"peak RSS {peak:.0f} MiB, small replay {baseline:.0f} MiB"
    assert code == 4
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["messages"] == 1000
    assert summary["counters"]["resync_skipped_bytes"] == 8 << 26
    [error] = summary["input_errors"]
    assert f"framing lost at byte {len(head):,} of the inflated stream" in error and "no record frames" in error
    assert time.monotonic() - started < 60
