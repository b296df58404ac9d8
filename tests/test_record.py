"""Recorder and the recording process's drain of the frame ring: rotation by size and time, the file cap,
read-back by our replay and by tshark, write errors, what a SIGKILL leaves, runs that wrap at the ring's end.
Unprivileged; the records are the frames of pcaps/sample.pcap (a nanosecond, little-endian pcap, so its records
are byte for byte what the hot side writes)."""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.capture import record as R
from appliance.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
APPLIANCE = [sys.executable, "-m", "appliance"]
MINUTE = 1_795_600_800               # 2026-11-25T06:00:00Z, a multiple of 60 s since the epoch


def sample_records() -> list[bytes]:
    data = SAMPLE.read_bytes()
    pos, out = R.FILE_HEADER, []
    while pos < len(data):
        incl = struct.unpack_from("<I", data, pos + R.INCL_LEN)[0]
        out.append(data[pos:pos + R.RECORD_HEADER + incl])
        pos += R.RECORD_HEADER + incl
    return out


RECORDS = sample_records()


def read_pcap(path: Path) -> tuple[bytes, list[bytes], bytes]:
    """(file header, whole records, bytes of a record cut short at the end)."""
    data = path.read_bytes()
    pos, out = R.FILE_HEADER, []
    while pos + R.RECORD_HEADER <= len(data):
        end = pos + R.RECORD_HEADER + struct.unpack_from("<I", data, pos + R.INCL_LEN)[0]
        if end > len(data):
            break
        out.append(data[pos:end])
        pos = end
    return data[:R.FILE_HEADER], out, data[pos:]


def feed(rec: R.Recorder, records: list[bytes], run_bytes: int, per_run: int | None = None) -> list[int]:
    """Hand records to ``rec`` in runs of at most ``run_bytes`` (and ``per_run`` records), as the recording
    process hands it what the frame ring held; the byte counts of the runs."""
    sizes: list[int] = []
    run: list[bytes] = []
    for raw in records + [None]:
        if run and (raw is None or sum(map(len, run)) + len(raw) > run_bytes or len(run) == per_run):
            data = np.frombuffer(b"".join(run), np.uint8)
            rec.write([data[:len(data) // 3], data[len(data) // 3:]])      # two pieces, as across the ring's end
            sizes.append(len(data))
            run = []
        if raw is not None:
            run.append(raw)
    return sizes


def ours(directory: Path, prefix: str = "feed") -> list[Path]:
    """The recordings of ``prefix``, oldest first."""
    pattern = re.compile(re.escape(prefix) + r"-\d{8}T\d{6}\.\d{6}Z-\d{6,}\.pcap")
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name))


def replay_summary(paths, out: Path) -> dict:
    done = subprocess.run(APPLIANCE + ["replay", *map(str, paths), "--out", str(out), "-q"], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "summary.json").read_text())


def stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


# -- layout -----------------------------------------------------------------------------------------------
def test_header_is_the_nanosecond_pcap_header(tmp_path):
    path = tmp_path / "h.pcap"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    R.write_header(fd, 9000)
    os.close(fd)
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", path.read_bytes())
    assert (magic, major, minor, zone, sigfigs, snaplen, linktype) == (0xA1B23C4D, 2, 4, 0, 0, 9000, 1)
    assert (R.PCAP_NS_MAGIC, R.FILE_HEADER, R.RECORD_HEADER) == (0xA1B23C4D, 24, 16)
    # The sample is the same kind of file: its header is what the recorder writes for snaplen 65535.
    assert SAMPLE.read_bytes()[:24] == R.file_header(65535)


def test_one_file_is_the_source_byte_for_byte(tmp_path):
    with R.Recorder(tmp_path) as rec:
        sizes = feed(rec, RECORDS, 64 << 10)
    (only,) = ours(tmp_path)
    assert only.read_bytes() == SAMPLE.read_bytes()
    st = rec.stats
    assert (st["files_opened"], st["writes"], st["bytes_written"], st["write_errors"]) == (
        1, len(sizes), SAMPLE.stat().st_size - 24, 0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_options_are_checked(tmp_path):
    for bad in (dict(rotate_bytes=24), dict(rotate_seconds=0), dict(max_files=0), dict(prefix="a/b"),
                dict(snaplen=0)):
        with pytest.raises(UserError):
            R.Recorder(tmp_path, **bad)


# -- rotation -------------------------------------------------------------------------------------------
def test_rotation_by_size_splits_at_runs_and_never_exceeds(tmp_path):
    limit = 200_000
    with R.Recorder(tmp_path, rotate_bytes=limit) as rec:
        sizes = feed(rec, RECORDS, 48 << 10)
    files = ours(tmp_path)
    expected, size = [], None          # the split rule, replayed over the run sizes written
    for n in sizes:
        if size is None or (size > 24 and size + n > limit):
            expected.append(24)
            size = 24
        size += n
        expected[-1] = size
    assert [p.stat().st_size for p in files] == expected
    assert all(p.stat().st_size <= limit for p in files)
    assert b"".join(b"".join(read_pcap(p)[1]) for p in files) == b"".join(RECORDS)
    assert rec.stats["files_opened"] == len(files) > 5


def test_a_run_larger_than_the_limit_is_one_file(tmp_path):
    with R.Recorder(tmp_path, rotate_bytes=1000) as rec:
        sizes = feed(rec, RECORDS[:400], 32 << 10)
    assert [p.stat().st_size - 24 for p in ours(tmp_path)] == sizes


def test_rotation_by_time_on_whole_minutes(tmp_path):
    # The recorder reads the clock once per run, so a list of times is a deterministic clock.
    times = [MINUTE - 0.2, MINUTE - 0.1, MINUTE + 0.05, MINUTE + 30, MINUTE + 59.99, MINUTE + 60, MINUTE + 125]
    clock = iter(times).__next__
    with R.Recorder(tmp_path, rotate_seconds=60, clock=clock) as rec:
        sizes = feed(rec, RECORDS[:700], 64 << 10, per_run=100)
    assert len(sizes) == len(times)
    files = ours(tmp_path)
    assert [p.name for p in files] == [f"feed-{stamp(t)}-{i:06d}.pcap" for i, t in
                                       enumerate([times[0], times[2], times[5], times[6]], 1)]
    assert [len(read_pcap(p)[1]) for p in files] == [200, 300, 100, 100]
    assert b"".join(b"".join(read_pcap(p)[1]) for p in files) == b"".join(RECORDS[:700])


def test_max_files_removes_the_oldest_of_our_prefix_only(tmp_path):
    strangers = ["other-20200101T000000.000000Z-000001.pcap", "feed-notes.txt", "feedx-20200101T000000.000000Z"
                 "-000001.pcap", "feed-b-20200101T000000.000000Z-000001.pcap", "feed.pcap"]
    for name in strangers:
        (tmp_path / name).write_bytes(b"keep me")
    (tmp_path / "feed-20200101T000000.000000Z-000001.pcap").write_bytes(b"an older run")
    times = iter(range(MINUTE, MINUTE + 10_000)).__next__
    with R.Recorder(tmp_path, rotate_bytes=100_000, max_files=3, clock=times) as rec:
        feed(rec, RECORDS, 32 << 10)
    st = rec.stats
    kept = ours(tmp_path)
    assert [p.name for p in kept if "feed-2020" in p.name] == []
    assert len(kept) == 3
    assert st["files_removed"] == st["files_opened"] + 1 - 3
    assert kept[-1].stat().st_size > 24 and read_pcap(kept[-1])[1][-1] == RECORDS[-1]
    for name in strangers:
        assert (tmp_path / name).read_bytes() == b"keep me"


# -- the recording process's side: the frame ring ---------------------------------------------------------
def _region(frame_bytes: int):
    from appliance.cold.rows import Region

    return Region.create({}, {}, frame_bytes)


def _append(region, raw: bytes) -> bool:
    """What the hot side's ``_record`` does, in Python: the record at the head (wrapping), or False if no room."""
    from appliance.ring.deliver import REC_HEAD, REC_TAIL

    ctl, ring = region.fctl, region.frames
    head = int(ctl[REC_HEAD])
    if head + len(raw) - int(ctl[REC_TAIL]) > len(ring):
        return False
    at = head & (len(ring) - 1)
    first = min(len(raw), len(ring) - at)
    ring[at:at + first] = np.frombuffer(raw[:first], np.uint8)
    ring[:len(raw) - first] = np.frombuffer(raw[first:], np.uint8)
    ctl[REC_HEAD] = head + len(raw)
    return True


def test_drain_writes_the_ring_in_order_across_its_end_and_frees_it(tmp_path):
    """The recording process's loop: every record the producer appended, in order, though the 1 MiB ring wraps
    four times (the producer waits for room whenever it is full); the tail catches up with the head; on FINISHED
    it returns once the ring is empty."""
    from appliance.cold import recording as REC
    from appliance.cold.rows import STATE_FINISHED

    region = _region(1 << 20)
    life_r, life_w = os.pipe()
    rec = R.Recorder(tmp_path / "rec", rotate_bytes=1_500_000)
    done = {}
    drainer = threading.Thread(target=lambda: done.setdefault("how", REC.drain(region, rec, life_r)))
    drainer.start()
    try:
        for raw in RECORDS * 2:                       # about 2 x 2.2 MB through a 1 MiB ring: it wraps 4 times
            while not _append(region, raw):
                time.sleep(0.001)
        region.set_state(STATE_FINISHED)
        drainer.join(20)
        assert done.get("how") == "finished"
    finally:
        os.close(life_w)
        drainer.join(20)
        os.close(life_r)
    rec.close()
    # (whether the producer ever found the ring full depends on the machine's timing: not asserted)
    assert int(region.fctl[REC.RS_TAIL]) == int(region.fctl[0]) == sum(map(len, RECORDS)) * 2
    files = ours(tmp_path / "rec")
    assert len(files) >= 3
    assert b"".join(b"".join(read_pcap(p)[1]) for p in files) == b"".join(RECORDS * 2)
    assert int(region.fctl[REC.RS_BYTES_WRITTEN]) == rec.stats["bytes_written"] == sum(map(len, RECORDS)) * 2
    assert int(region.fctl[REC.RS_FILES_OPENED]) == len(files)


def test_drain_writes_what_was_published_when_the_producer_goes_away(tmp_path):
    from appliance.cold import recording as REC

    region = _region(1 << 20)
    for raw in RECORDS[:500]:
        assert _append(region, raw)
    life_r, life_w = os.pipe()
    os.close(life_w)                                   # the capture died: the life pipe hung up
    rec = R.Recorder(tmp_path)
    assert REC.drain(region, rec, life_r) == "producer_gone"
    os.close(life_r)
    rec.close()
    (path,) = ours(tmp_path)
    assert read_pcap(path)[1] == RECORDS[:500]


def test_a_dead_recorder_leaves_its_unwritten_records_counted(tmp_path):
    """What a RecordingProcess reports when its process died: its line's counts plus the records still between
    its tail and the head, as dropped."""
    from appliance.cold import recording as REC

    region = _region(1 << 20)
    for raw in RECORDS[:50]:
        assert _append(region, raw)
    region.fctl[REC.RS_TAIL] = sum(map(len, RECORDS[:20]))      # it wrote the first 20 and died
    region.fctl[REC.RS_BYTES_WRITTEN] = sum(map(len, RECORDS[:20]))
    proc = REC.RecordingProcess(region, str(tmp_path), None, None, None, 65535)
    proc.ended = "the recording process (pid 1) was killed by signal 9; ..."
    st = proc.result()
    assert (st["records_dropped"], st["bytes_dropped"]) == (30, sum(map(len, RECORDS[20:50])))
    assert st["bytes_written"] == sum(map(len, RECORDS[:20])) and st["last_error"] == proc.ended


# -- read back by appliance replay and tshark ---------------------------------------------------------
@pytest.fixture(scope="module")
def sample_summary(tmp_path_factory):
    return replay_summary([SAMPLE], tmp_path_factory.mktemp("sample") / "out")


def test_rotated_files_replay_and_read_in_tshark_like_the_source(tmp_path, sample_summary):
    rec_dir = tmp_path / "rec"
    with R.Recorder(rec_dir, rotate_bytes=700_000) as rec:
        feed(rec, RECORDS, 100_000)
    files = ours(rec_dir)
    assert len(files) == 3
    summary = replay_summary(files, tmp_path / "out")
    for key in ("frames", "packets", "messages", "messages_by_type", "gaps", "bad_packets", "duplicate_packets",
                "heartbeats", "open_orders"):
        assert summary[key] == sample_summary[key], key
    assert summary["counters"]["truncated_records"] == 0
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    for path in files:
        done = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.len"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.split()) == len(read_pcap(path)[1])


# -- write errors ---------------------------------------------------------------------------------------
FSIZE_CHILD = """
import json, resource, signal, sys
import numpy as np
from appliance.capture import record as R
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # past the limit: EFBIG instead of the signal
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_024, 1_000_024))
rec = R.Recorder(sys.argv[1])
for n in (300_000, 300_000, 300_000, 300_000, 50_000, 300_000):
    rec.write([np.full(n, 7, np.uint8)])              # content is irrelevant to the file's size
rec.close()
print(json.dumps(rec.stats))
"""


def test_write_error_is_counted_cut_back_and_recording_goes_on(tmp_path):
    """A real kernel write error (EFBIG from RLIMIT_FSIZE, with a partial write first): the run is dropped, the
    partial bytes are cut off, the next run that fits is written; nothing raises."""
    done = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    (path,) = ours(tmp_path)
    # 24 + 3 x 300,000 fit; the 4th is cut back to 900,024; 50,000 fits; the last fails again.
    assert path.stat().st_size == 24 + 900_000 + 50_000
    assert (st["write_errors"], st["writes"], st["bytes_dropped"]) == (2, 4, 600_000)
    assert "File too large" in st["last_error"]


def test_open_failure_is_counted_and_the_next_run_retries(tmp_path):
    rec_dir = tmp_path / "rec"
    with R.Recorder(rec_dir) as rec:
        rec_dir.rmdir()                                    # nowhere to open the file: ENOENT
        feed(rec, RECORDS[:100], 64 << 10)
        rec_dir.mkdir()
        feed(rec, RECORDS[100:200], 64 << 10)
    st = rec.stats
    assert (st["write_errors"], st["records_dropped"], st["files_opened"]) == (1, 100, 1)
    assert "No such file or directory" in st["last_error"]
    (path,) = ours(rec_dir)
    assert read_pcap(path)[1] == RECORDS[100:200]


# -- SIGKILL --------------------------------------------------------------------------------------------
KILL_CHILD = """
import bisect, sys, time
import numpy as np
from appliance.capture import record as R
blob = open(sys.argv[2], "rb").read()[24:]
ends, pos = [], 0
while pos < len(blob):
    pos += 16 + int.from_bytes(blob[pos + 8:pos + 12], "little")
    ends.append(pos)
data = np.frombuffer(blob, np.uint8)
rec = R.Recorder(sys.argv[1], rotate_bytes=3 << 20, max_files=4)
start = 0
while True:
    # the whole records from `start` that fit in 1 MiB (wrapping around the sample)
    first = ends[start - 1] if start else 0
    stop = bisect.bisect_right(ends, first + (1 << 20))
    n = ends[stop - 1] - first
    rec.write([data[first:first + n]])
    start = stop % len(ends)
"""


def test_sigkill_leaves_files_every_reader_accepts(tmp_path):
    rec_dir = tmp_path / "rec"
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(rec_dir), str(SAMPLE)], cwd=REPO,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (rec_dir.is_dir() and len(ours(rec_dir)) >= 3):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child recorded nothing"
            time.sleep(0.01)
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    files = ours(rec_dir)
    assert 1 <= len(files) <= 5                            # the cap, plus the one opened before pruning
    whole = 0
    for path in files:
        header, records, cut = read_pcap(path)
        assert header == R.file_header(65535)
        assert not cut or path == files[-1], f"{path.name} is not the newest yet ends in a cut record"
        whole += len(records)
    summary = replay_summary(files, tmp_path / "out")
    assert summary["frames"] == whole
    assert summary["counters"]["truncated_records"] <= 1
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    for path in files:
        done = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.len"],
                              capture_output=True, text=True)
        assert done.returncode == 0 or "cut short in the middle of a packet" in done.stderr, done.stderr
        assert len(done.stdout.split()) == len(read_pcap(path)[1])


def test_stale_part_files_of_our_prefix_are_removed(tmp_path):
    (tmp_path / ".feed-20200101T000000.000000Z-000001.pcap.part").write_bytes(b"x" * 24)
    (tmp_path / ".other-20200101T000000.000000Z-000001.pcap.part").write_bytes(b"x")
    R.Recorder(tmp_path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other-20200101T000000.000000Z-000001.pcap.part"]
