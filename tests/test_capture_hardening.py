"""Live-capture defects from hostile testing (issue 8), each reproduced the way it was found.

* a recording that loses frames on a full disk says so: drops.recording, the report, exit 1;
* validate gets a lab of its own: a default name per run, an existing namespace refused and left alone.
Root and network namespaces; each test makes and deletes its own.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_capture import FEEDS, REPO, SAMPLE, _appliance, wait_capturing

pytestmark = [pytest.mark.root, pytest.mark.netns]


def _pcap_records(path: Path) -> int:
    data = path.read_bytes()
    pos, count = 24, 0
    while pos + 16 <= len(data):
        pos += 16 + int.from_bytes(data[pos + 8:pos + 12], "little")
        count += 1
    return count


def test_recording_loss_on_a_full_disk_is_counted_reported_and_fails(tmp_path):
    """--record into a 256 KiB tmpfs (mounted in a private mount namespace): the writer hits ENOSPC.  Every frame
    the rings delivered is either in a file or counted in drops.recording, the report says how many were not
    recorded, and the exit status is 1."""
    from appliance.capture.lab import Lab

    rec, out = tmp_path / "rec", tmp_path / "out"
    rec.mkdir()
    capture = _appliance("capture", "--iface", "lab0", "--engine", "tpacket", "--out", str(out), "--record",
                         str(rec), *[a for f in FEEDS for a in ("--feed", f)])
    with Lab(f"appl-full-{os.getpid()}", queues=1) as lab:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                'mount -t tmpfs -o size=256k appliance-test "$1"; shift; exec "$@"', "sh", str(rec),
                *lab.netns_cmd(capture)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        err_lines = wait_capturing(proc)
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        stdout, stderr = proc.communicate(timeout=120)            # stops at the end of session
    stderr = "".join(err_lines) + stderr
    assert proc.returncode == 1, stderr
    summary = json.loads((out / "summary.json").read_text())
    cap = summary["capture"]
    lost = cap["drops"]["recording"]
    assert lost > 0 and lost == cap["recording"]["records_dropped"] + cap["counters"]["recording_dropped_frames"]
    assert "No space left" in cap["recording"]["last_error"]
    # the tmpfs is gone with the mount namespace: what reached it cannot be read back here, but every frame the
    # ring delivered was put into a recording buffer, and those not written are the ones counted
    assert cap["counters"]["recorded_frames"] + cap["counters"]["recording_dropped_frames"] == \
        cap["counters"]["ring_frames"]
    assert f"{lost:,} frames not recorded" in stdout
    assert "not recorded" in stderr.strip().splitlines()[-1] and "incomplete" in stderr


def test_validate_refuses_an_existing_lab_and_leaves_it_alone(tmp_path):
    name = f"appl-busy-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        done = subprocess.run(_appliance("validate", str(SAMPLE), "--lab", name, "--out", str(tmp_path)),
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert f"named {name} already exists" in line and "--lab" in line
        assert Path(f"/run/netns/{name}").exists()              # not used, not deleted
        assert not (tmp_path / "replay").exists()                # refused before anything ran
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_two_validates_with_default_lab_names_both_pass(tmp_path):
    """Two CI jobs on one host: each run makes its own lab (the default name carries the pid)."""
    runs = [subprocess.Popen(_appliance("validate", str(SAMPLE), "--engine", "tpacket", "--out", str(tmp_path / k)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
            for k in ("a", "b")]
    results = [p.communicate(timeout=600) for p in runs]
    for proc, (out, err) in zip(runs, results):
        assert proc.returncode == 0, out + err
        assert out.startswith("PASS  tpacket")
    labs = [next(w for w in err.split() if w.startswith("appliance-validate-")) for _, err in results]
    assert labs[0] != labs[1] and not any(Path(f"/run/netns/{lab}").exists() for lab in labs)


def test_validate_of_an_input_without_end_of_session_does_not_wait_out_its_timeout(tmp_path):
    """sample.pcap minus its end-of-session packet: validate says it will stop the capture itself and does, well
    inside the 120 s timeout, and the comparison still passes."""
    cut = tmp_path / "no-eos.pcap"
    made = subprocess.run(["editcap", "-r", str(SAMPLE), str(cut), "1-8300"], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip("needs editcap (wireshark-common)")
    started = time.monotonic()
    done = subprocess.run(_appliance("validate", str(cut), "--engine", "tpacket", "--out", str(tmp_path / "v")),
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no end-of-session packet" in done.stderr and "stopping the capture 1 s after sending" in done.stderr
    replay = json.loads((tmp_path / "v" / "replay" / "summary.json").read_text())
    assert replay["end_of_session"] == []
    assert time.monotonic() - started < 100


def test_sigint_during_start_up_still_writes_the_summary(tmp_path):
    """Ctrl-C half a second in (numpy and numba still loading, tables not yet allocated): the capture stops before
    its first frame, writes its outputs and summary.json, and exits 0 as after any operator stop -- not 130."""
    from appliance.capture.lab import Lab

    with Lab(f"appl-int-{os.getpid()}", queues=1) as lab:
        proc = subprocess.Popen(lab.netns_cmd(_appliance("capture", "--iface", "lab0", "--engine", "tpacket",
                                                         "--out", str(tmp_path), "--feed", FEEDS[0])),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)                    # ip netns exec execs python: the same pid
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["capture"]["stop_reason"] == "SIGINT" and summary["packets"] == 0
    assert "stopped by SIGINT" in out
