"""The capture's output process under trouble, live in a lab namespace (veth lab0 <-> lab1):

* a deliberately slow output process (the ``--slow-output-ms`` test hook, a small ``--ring-rows``) falls more
  than a ring behind: its lost rows are counted and reported (exit 1, one sentence), the capture receives every
  frame, and the books and summary are exact;
* SIGKILL of the output process: the capture says so in one sentence, goes on to the end of session with exact
  books and summary, and exits 1;
* SIGKILL of the capture: the output process notices, writes what was published, says so and exits; the tables
  it wrote read back and equal replay's;
* SIGKILL of the recording process: the capture says so, every frame from then on is counted as not recorded
  (the ring's unwritten records with them), books, tables and summary stay exact, exit 1.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from conftest import module_lab
from test_capture import FEEDS, REPO, SAMPLE, _appliance, _attached, _start_capture

pytestmark = [pytest.mark.root, pytest.mark.netns]


lab = module_lab("appl-cold")


def _send(lab, pps=20000):
    sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", str(pps))),
                          capture_output=True, text=True, cwd=REPO)
    assert sent.returncode == 0, sent.stderr


def _output_process(proc, module: str = "appliance.cold.output") -> psutil.Process:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children(recursive=True):
            if module in " ".join(child.cmdline()):
                return child
        time.sleep(0.1)
    raise AssertionError(f"no {module} process")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("replayed")
    done = subprocess.run(_appliance("replay", str(SAMPLE), "--out", str(out / "r"), "-q"), capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return out / "r"


def _exact(summary):
    assert summary["messages"] == 19_999 and summary["end_of_session"] == ["TEST000001"]
    assert summary["symbols"]["XCSR"]["volume"] == 26_968
    assert not any(summary["capture"]["drops"].values()), summary["capture"]["drops"]


@pytest.mark.parametrize("engine", ["xdp"])
def test_slow_output_process_loses_counted_rows_and_the_capture_stays_exact(lab, tmp_path, engine):
    proc = _start_capture(lab, tmp_path, "--engine", engine, "--ring-rows", "4096", "--slow-output-ms", "1000")
    _send(lab)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "fell more than a ring behind and lost rows" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    _exact(summary)
    output = summary["capture"]["output"]
    bbo = output["consumers"]["tables"]["rings"]["bbo"]
    assert bbo["lost"] > 0 and bbo["delivered"] + bbo["lost"] == output["published"]["bbo"] == 10_087
    assert output["rows_lost"] >= bbo["lost"] and output["process"]["exit_status"] == 0
    lines = (tmp_path / "bbo.csv").read_text().splitlines()
    assert len(lines) - 1 == bbo["delivered"]


def test_sigkill_of_the_output_process_is_said_and_the_capture_goes_on(lab, tmp_path):
    proc = _start_capture(lab, tmp_path, "--engine", "xdp")
    writer = _output_process(proc)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    time.sleep(0.3)                                    # the control thread looks every 0.1 s
    _send(lab)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert f"the output process (pid {writer.pid}) was killed by signal 9" in err
    assert err.count("was killed by signal 9") == 2          # said when seen, and again as the exit reason
    summary = json.loads((tmp_path / "summary.json").read_text())
    _exact(summary)
    assert summary["capture"]["output"]["process"]["ended_early"]


def test_a_clean_capture_records_every_frame_and_exits_0(lab, tmp_path, replayed):
    """The recording process ends with the capture (after it wrote the last frame), not as a failure."""
    rec = tmp_path / "rec"
    proc = _start_capture(lab, tmp_path / "out", "--engine", "xdp", "--record", str(rec))
    _send(lab)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    cap = summary["capture"]
    assert cap["drops"]["recording"] == 0 and cap["counters"]["recorded_frames"] == 8_322
    assert cap["recording"]["write_errors"] == 0 and cap["recording"]["files_opened"] == 1
    done = subprocess.run(_appliance("replay", *map(str, sorted(rec.glob("*.pcap"))), "--out", str(tmp_path / "re"),
                                     "-q"), capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    again = json.loads((tmp_path / "re" / "summary.json").read_text())
    assert again["frames"] == 8_322 and again["messages"] == 19_999
    assert (tmp_path / "re" / "bbo.csv").read_bytes() == (replayed / "bbo.csv").read_bytes()


def test_a_recording_directory_that_cannot_be_made_is_one_sentence(lab, tmp_path):
    """The recording process says why it cannot start; the capture relays it and exits 2 before any frame."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    argv = _appliance("capture", "--iface", "lab0", "--out", str(tmp_path / "out"), "--record", str(blocker / "rec"))
    for feed in FEEDS:
        argv += ["--feed", feed]
    done = subprocess.run(lab.netns_cmd(argv), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert "cannot make the recording directory" in line and "Traceback" not in done.stderr
    assert _attached(lab) == "{}"


def test_sigkill_of_the_recording_process_counts_every_frame_not_recorded(lab, tmp_path, replayed):
    rec = tmp_path / "rec"
    proc = _start_capture(lab, tmp_path / "out", "--engine", "xdp", "--record", str(rec))
    recorder = _output_process(proc, "appliance.cold.recording")
    recorder.send_signal(signal.SIGKILL)
    recorder.wait(10)
    time.sleep(0.3)
    _send(lab)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert f"the recording process (pid {recorder.pid}) was killed by signal 9" in err
    assert "8,322 frames were decoded but not recorded" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    cap = summary["capture"]
    assert cap["counters"]["ring_frames"] == 8_322 == cap["drops"]["recording"]
    # the ring took what it had room for (never written: counted when the capture ended), the rest found it full
    assert cap["recording"]["records_dropped"] + cap["counters"]["recording_dropped_frames"] == 8_322
    assert cap["recording"]["bytes_written"] == 0 and not list(rec.glob("*.pcap"))
    assert summary["messages"] == 19_999 and summary["symbols"]["XCSR"]["volume"] == 26_968
    assert (tmp_path / "out" / "bbo.csv").read_bytes() == (replayed / "bbo.csv").read_bytes()


def test_sigkill_of_the_capture_ends_the_output_process_with_its_tables_whole(lab, tmp_path, replayed):
    proc = _start_capture(lab, tmp_path, "--engine", "xdp", "--no-stop-at-end")
    writer = _output_process(proc)
    _send(lab)
    time.sleep(1.0)                                    # every frame decoded and its rows published
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)              # stderr closes once the output process has exited too
    # its stderr closed: it has ended, though the kernel may still be tearing its memory down (no fds, no
    # command line, state R) for a moment before it is a zombie or gone
    deadline = time.monotonic() + 10
    while writer.is_running() and writer.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not writer.is_running() or writer.status() == psutil.STATUS_ZOMBIE
    assert "the capture (pid" in err and "ended without finishing" in err
    for name in ("bbo.csv", "trades.csv", "broken.csv"):
        assert (tmp_path / name).read_bytes() == (replayed / name).read_bytes(), name
    assert not (tmp_path / "summary.json").exists()


def test_a_second_consumer_falls_behind_alone(lab, tmp_path):
    """A consumer attached from outside (the ready file's pid and rows_fd) reads 100 rows every 0.1 s: it loses
    rows, counted in its own slot; the files consumer loses none and the capture exits 0."""
    from appliance.cold.rows import BBO, Reader, Region

    ready = tmp_path / "ready.json"
    proc = _start_capture(lab, tmp_path / "out", "--engine", "xdp", "--ring-rows", "4096", "--ready-file", str(ready))
    info = json.loads(ready.read_text())
    region = Region.open_pid(info["pid"], info["rows_fd"])
    reader = Reader(region)
    sender = subprocess.Popen(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    taken = lost = 0
    while proc.poll() is None:
        rows, gone = reader.take(BBO, 100)
        taken, lost = taken + len(rows), lost + gone
        time.sleep(0.1)
    assert sender.wait(30) == 0
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    _exact(summary)
    consumers = summary["capture"]["output"]["consumers"]
    assert consumers["tables"]["rings"]["bbo"] == {"delivered": 10_087, "lost": 0}
    mine = consumers[f"slot{reader.slot}"]
    assert mine["pid"] == os.getpid() and mine["rings"]["bbo"]["lost"] > 0
    assert mine["rings"]["bbo"]["delivered"] + mine["rings"]["bbo"]["lost"] <= 10_087
    assert len((tmp_path / "out" / "bbo.csv").read_text().splitlines()) == 10_088
    # the hot side's counters live in the region too, read here from outside the capture
    from appliance.decode import counters as C
    from appliance.ring.deliver import CAP_FRAMES, CAP_LAT_COUNT

    assert region.cnt[C.MESSAGES] == summary["messages"] == 19_999
    assert region.by_type[ord("A")] == summary["messages_by_type"]["A"]
    assert region.cap[CAP_FRAMES] == summary["capture"]["counters"]["ring_frames"]
    assert region.hist.sum() == region.cap[CAP_LAT_COUNT] == summary["capture"]["latency"]["samples"]
