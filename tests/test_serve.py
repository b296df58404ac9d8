"""``appliance serve``: live in a lab namespace (veth lab0 <-> lab1), and its pieces without privileges.

The lab tests share one serve process (module fixture ``served``), in order: the first session sent in three
parts (ready, stale, ready again, ended and filed); four more sessions (made here from pcaps/sample.pcap with
another MoldUDP64 session name) with the between-sessions window and the RSS after each; SIGHUP adding a feed
line; retention under a small budget; SIGTERM in the middle of a session.  systemd's notify protocol is a real
AF_UNIX datagram socket named by NOTIFY_SOCKET.  The rest (retention, directory naming, the state file, the unit
file, config errors) runs unprivileged.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import module_lab

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
UNIT = REPO / "provisioning" / "systemd" / "appliance.service"
PORT = 19108                      # inside the lab's own namespace: nothing else listens there
FEED_PORT = 26400
A, B, C = "233.54.12.1", "233.54.12.2", "233.54.12.3"
STALE = 2


def _appliance(*argv: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *argv]


# -- pcaps made here ------------------------------------------------------------------------------------------
def rewrite_pcap(src: Path, dst: Path, session: bytes | None = None, move: dict[str, str] | None = None,
                 frames: slice | None = None) -> int:
    """Copy a classic pcap: in every IPv4 UDP frame to FEED_PORT, the MoldUDP64 session field (the payload's first
    10 bytes) becomes ``session`` and the UDP checksum 0 (none); ``move`` re-addresses groups (IPv4 destination,
    its header checksum and the multicast MAC); ``frames`` keeps a slice of the records.  Returns records
    written."""
    data = src.read_bytes()
    out = [data[:24]]
    moved = {socket.inet_aton(k): socket.inet_aton(v) for k, v in (move or {}).items()}
    records, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        records.append((data[off:off + 16], bytearray(data[off + 16:off + 16 + incl])))
        off += 16 + incl
    kept = records[frames] if frames is not None else records
    for header, frame in kept:
        if len(frame) >= 42 and frame[12:14] == b"\x08\x00" and frame[23] == 17:
            ihl = (frame[14] & 15) * 4
            udp = 14 + ihl
            if struct.unpack_from(">H", frame, udp + 2)[0] == FEED_PORT:
                if session is not None:
                    frame[udp + 8:udp + 18] = session
                    frame[udp + 6:udp + 8] = b"\0\0"
                group = bytes(frame[30:34])
                if group in moved:
                    new = moved[group]
                    frame[30:34] = new
                    frame[0:6] = bytes([0x01, 0x00, 0x5E, new[1] & 0x7F, new[2], new[3]])
                    frame[24:26] = b"\0\0"
                    frame[24:26] = struct.pack(">H", _ip_checksum(bytes(frame[14:14 + ihl])))
                    frame[udp + 6:udp + 8] = b"\0\0"
        out += [header, bytes(frame)]
    dst.write_bytes(b"".join(out))
    return len(kept)


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_the_rewriter_changes_only_what_it_says(tmp_path):
    out = tmp_path / "s2.pcap"
    assert rewrite_pcap(SAMPLE, out, b"TEST000002") == 8_328
    before, after = SAMPLE.read_bytes(), out.read_bytes()
    assert len(before) == len(after) and before.count(b"TEST000001") > 8_000
    assert b"TEST000001" not in after and after.count(b"TEST000002") >= 8_322
    moved = tmp_path / "moved.pcap"
    rewrite_pcap(SAMPLE, moved, move={B: C})
    data = moved.read_bytes()
    assert socket.inet_aton(B) not in data[24:] or data.count(socket.inet_aton(C)) > 4_000
    # a re-addressed header still sums to 0xFFFF (its checksum is right)
    off = 24
    incl = struct.unpack_from("<I", data, off + 8)[0]
    for _ in range(50):
        frame = data[off + 16:off + 16 + incl]
        if frame[30:34] == socket.inet_aton(C):
            assert _ip_checksum(frame[14:34]) == 0
            break
        off += 16 + incl
        incl = struct.unpack_from("<I", data, off + 8)[0]
    else:
        raise AssertionError("no re-addressed frame among the first 50")


# -- retention ------------------------------------------------------------------------------------------------
def _ours(directory: Path, n: int, size: int = 1000, start: float = 1_700_000_000) -> list[str]:
    names = []
    for i in range(n):
        name = time.strftime("feed-%Y%m%dT%H%M%S", time.gmtime(start + i)) + f".000000Z-{i + 1:06d}.pcap"
        (directory / name).write_bytes(b"x" * size)
        os.utime(directory / name, (start + i, start + i))
        names.append(name)
    return names


def test_retention_keeps_the_budget_never_the_newest_never_others(tmp_path):
    from appliance.service.retention import prune

    names = _ours(tmp_path, 6)
    for other in ("notes.txt", "feed-x.pcap", "other-20240101T000000.000000Z-000001.pcap", ".feed.part"):
        (tmp_path / other).write_bytes(b"y" * 5000)
    gone = prune(str(tmp_path), retain_bytes=2500)
    assert [g.name for g in gone] == names[:4] and all("budget" in g.why and g.size == 1000 for g in gone)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("feed-2")) == names[4:]
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "feed-x.pcap").exists()
    assert (tmp_path / "other-20240101T000000.000000Z-000001.pcap").exists()
    gone = prune(str(tmp_path), retain_bytes=1)                  # the newest stays whatever the budget
    assert [g.name for g in gone] == [names[4]] and (tmp_path / names[5]).exists()
    assert prune(str(tmp_path), retain_bytes=1) == []


def test_retention_by_age(tmp_path):
    from appliance.service.retention import prune

    names = _ours(tmp_path, 4, start=time.time() - 10 * 86400)
    os.utime(tmp_path / names[2], None)                          # touched now: young
    gone = prune(str(tmp_path), retain_days=2)
    assert [g.name for g in gone] == [names[0], names[1]] and all("older than 2 days" in g.why for g in gone)
    assert (tmp_path / names[3]).exists()                         # old but the newest


def test_retention_keeps_free_space_above_the_floor(tmp_path, monkeypatch):
    from appliance.service import retention

    names = _ours(tmp_path, 5, size=4096)
    capacity = 1 << 20                                            # a 1 MiB file system holding 1 MiB - 12 KiB

    def statvfs(path):
        used = sum(p.stat().st_size for p in Path(path).iterdir())
        free = capacity - 8192 - used
        return SimpleNamespace(f_bavail=free // 4096, f_frsize=4096, f_blocks=capacity // 4096)

    assert retention.free_bytes(str(tmp_path), statvfs) == capacity - 8192 - 5 * 4096
    gone = retention.prune(str(tmp_path), free_floor=capacity - 8192 - 2 * 4096, statvfs=statvfs)
    assert [g.name for g in gone] == names[:3] and all("floor" in g.why for g in gone)


def test_retention_with_a_real_small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("root: mounts a 1 MiB tmpfs")
    from appliance.service.retention import prune

    mnt = tmp_path / "small"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.decode().strip()}")
    try:
        names = _ours(mnt, 8, size=100_000)
        gone = prune(str(mnt), free_floor=600_000)
        st = os.statvfs(mnt)
        assert st.f_bavail * st.f_frsize >= 600_000 and gone and [g.name for g in gone] == names[:len(gone)]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- session directories, the state file ----------------------------------------------------------------------
def test_session_directories_are_named_by_date_and_session(tmp_path):
    from appliance.service import sessions

    summary = {"sessions": [{"session": "TEST000001"}], "session_date": {"date": "2026-12-01"}}
    assert sessions.final_name(summary) == "2026-12-01-TEST000001"
    assert sessions.final_name({"sessions": [{"session": "../\x1b x"}], "session_date": {"date": None}}) == \
        "undated-_____x"
    assert sessions.final_name({"sessions": []}) is None
    first = sessions.staging_dir(str(tmp_path))
    (first / "bbo.csv").write_text("x")
    assert sessions.settle(first, summary) == tmp_path / "2026-12-01-TEST000001"
    again = sessions.staging_dir(str(tmp_path))
    (again / "bbo.csv").write_text("y")
    assert sessions.settle(again, summary) == tmp_path / "2026-12-01-TEST000001.2"
    empty = sessions.staging_dir(str(tmp_path))
    assert sessions.settle(empty, {"sessions": []}) is None and not empty.exists()
    assert sessions.leftovers(str(tmp_path)) == []


def test_state_counts_starts_and_unclean_restarts(tmp_path):
    from appliance.service.state import ServeState

    s = ServeState(str(tmp_path))
    assert s.start() is False and s.restarts == 0
    s.stop()
    s = ServeState(str(tmp_path))
    assert s.start() is False and s.restarts == 0                 # the last one stopped cleanly
    s = ServeState(str(tmp_path))                                 # ... and this one was SIGKILLed: no stop()
    assert s.start() is True and s.restarts == 1
    assert json.loads((tmp_path / "serve-state.json").read_text())["starts"] == 3


# -- config errors and the unit file --------------------------------------------------------------------------
def _serve_cli(*argv, env=None):
    return subprocess.run(_appliance("serve", *argv), capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60)


def test_a_bad_config_is_one_sentence_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[capture]\ninterface = "lo"\nengine = "dpdk"\n[feeds.f]\nlines = [{name="A", group="233.54.12.1", '
                   'port=26400}]\n')
    done = _serve_cli("--config", str(bad))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "line 3" in done.stderr, done.stderr
    done = _serve_cli("--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2 and "no config file" in done.stderr and done.stderr.count("\n") == 1


def test_two_table_outputs_and_a_missing_interface_are_refused(tmp_path):
    base = ('[capture]\ninterface = "{iface}"\n[feeds.f]\nlines = [{{name="A", group="233.54.12.1", port=26400}}]\n'
            f'[service]\nstate_directory = "{tmp_path}/state"\n[recording]\nenabled = false\n')
    two = tmp_path / "two.toml"
    two.write_text(base.format(iface="lo") + f'[outputs.a]\nkind = "csv"\ndirectory = "{tmp_path}/a"\n'
                                             f'[outputs.b]\nkind = "csv"\ndirectory = "{tmp_path}/b"\n')
    done = _serve_cli("--config", str(two))
    assert done.returncode == 2 and "2 csv outputs" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    gone = tmp_path / "gone.toml"
    gone.write_text(base.format(iface="nosuchif0"))
    done = _serve_cli("--config", str(gone))
    assert done.returncode == 2 and "nosuchif0" in done.stderr and done.stderr.count("\n") == 1, done.stderr


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str
    unit.read(UNIT)
    return unit


def test_the_unit_file_says_what_serve_needs():
    unit = _unit()
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "on-failure" and svc["User"] == "appliance"
    assert svc["ExecStart"].split() == ["/opt/appliance/bin/appliance", "serve", "--config",
                                        "/etc/appliance/appliance.toml"]
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    caps = set(svc["AmbientCapabilities"].split())
    assert caps == {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON", "CAP_IPC_LOCK", "CAP_SYS_NICE"}
    assert set(svc["CapabilityBoundingSet"].split()) == caps
    assert "CAP_SYS_ADMIN" not in svc["CapabilityBoundingSet"]
    assert svc["NotifyAccess"] == "main" and int(svc["WatchdogSec"]) > 0
    assert svc["ProtectSystem"] == "strict" and "PrivateNetwork" not in svc
    for directory in ("/var/lib/appliance",):
        assert directory in svc["ReadWritePaths"].split()


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    # verify wants the ExecStart binary to exist: point a copy at this checkout's python
    text = UNIT.read_text().replace("/opt/appliance/bin/appliance", shutil.which("true") or "/bin/true")
    copy = tmp_path / "appliance.service"
    copy.write_text(text)
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if "appliance.service" in line and "Unknown user" not in line and "No such file" not in line]
    assert done.returncode == 0 or not complaints, done.stdout + done.stderr


# -- live, in a lab -------------------------------------------------------------------------------------------
lab = module_lab("appl-serve")


class Served:
    """The serve process, its stderr lines (read by a thread) and the notify datagrams it sent."""

    def __init__(self, lab, root: Path):
        self.lab, self.root = lab, root
        self.config = root / "appliance.toml"
        self.tables, self.rec = root / "tables", root / "rec"
        self.rec.mkdir()
        for other in ("notes.txt", "keep-me.pcap"):
            (self.rec / other).write_text("not a recording of ours\n")
        self.write_config([A, B])
        self.notify_path = root / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self.lines: list[str] = []
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC="2000000")
        self.proc = subprocess.Popen(lab.netns_cmd(_appliance("serve", "--config", str(self.config))), cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._listen, daemon=True).start()

    def write_config(self, groups: list[str]) -> None:
        lines = ", ".join(f'{{name = "{n}", group = "{g}", port = {FEED_PORT}}}' for n, g in zip("ABC", groups))
        self.config.write_text(textwrap.dedent(f"""\
            [capture]
            interface = "lab0"
            queues = [0]
            [feeds.test]
            lines = [{lines}]
            [recording]
            directory = "{self.rec}"
            rotate_size = "256K"
            retain_bytes = "1M"
            free_floor = "1M"
            [outputs.tables]
            kind = "csv"
            directory = "{self.tables}"
            [metrics]
            listen = "127.0.0.1:{PORT}"
            feed_stale_seconds = {STALE}
            [service]
            state_directory = "{self.root / 'state'}"
            """))

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _listen(self):
        while self.proc.poll() is None:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def wait_line(self, pattern: str, start: int = 0, timeout: float = 60) -> tuple[int, re.Match]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(start, len(self.lines)):
                m = re.search(pattern, self.lines[i])
                if m:
                    return i, m
            if self.proc.poll() is not None and not any(re.search(pattern, x) for x in self.lines[start:]):
                time.sleep(0.3)
                raise AssertionError(f"serve exited ({self.proc.returncode}) before {pattern!r}:\n" +
                                     "\n".join(self.lines))
            time.sleep(0.05)
        raise AssertionError(f"no line {pattern!r} within {timeout} s:\n" + "\n".join(self.lines))

    def get(self, path: str) -> tuple[int, str]:
        code = ("import urllib.request, urllib.error, sys\n"
                "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status); print(r.read().decode())\n"
                "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
        done = subprocess.run(self.lab.netns_cmd([sys.executable, "-c", code, f"http://127.0.0.1:{PORT}{path}"]),
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        status, _, body = done.stdout.partition("\n")
        return int(status), body

    def metric(self, name: str, labels: str = "") -> float:
        _, text = self.get("/metrics")
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
        assert m, f"{name}{labels} not in the exposition"
        return float(m.group(1))

    def wait_ready(self, want: int, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get("/readyz")
            if status == want or time.monotonic() > deadline:
                assert status == want, body
                return json.loads(body)["reasons"]
            time.sleep(0.2)

    def send(self, pcap: Path, pps: int = 20000) -> None:
        sent = subprocess.run(self.lab.netns_cmd(_appliance("replay", str(pcap), "--send", "lab1", "--pps", str(pps))),
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert sent.returncode == 0, sent.stderr

    def session_dir(self, session: str) -> Path:
        found = [p for p in self.tables.iterdir() if p.name.endswith(f"-{session}")]
        assert len(found) == 1, found
        return found[0]

    def ours(self) -> list[Path]:
        return sorted(p for p in self.rec.iterdir() if re.fullmatch(r"feed-.*Z-\d{6}\.pcap", p.name))


def _replay(pcap: Path, out: Path, groups: list[str]) -> Path:
    argv = _appliance("replay", str(pcap), "--out", str(out), "-q")
    for g in groups:
        argv += ["--feed", f"{g}:{FEED_PORT}"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def _same_tables(filed: Path, replayed: Path) -> None:
    for name in ("bbo.csv", "trades.csv"):
        assert (filed / name).read_bytes() == (replayed / name).read_bytes(), name


@pytest.fixture(scope="module")
def served(lab, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    s = Served(lab, root)
    s.wait_line(r"capturing on lab0", timeout=900)               # a cold numba cache compiles first
    s.started = True
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(30)
    s.notify.close()


pytestmark_live = [pytest.mark.root, pytest.mark.netns]


@pytest.mark.root
@pytest.mark.netns
def test_first_session_ready_stale_ready_filed(served, tmp_path):
    s = served
    assert any(m.startswith("READY=1") for m in s.messages), s.messages
    status, body = s.get("/healthz")
    assert status == 200, body
    assert "not heard" in json.dumps(s.wait_ready(503))           # waiting for the session: not ready
    parts = [tmp_path / f"part{i}.pcap" for i in range(3)]
    for i, cut in enumerate((slice(0, 3000), slice(3000, 6000), slice(6000, None))):
        rewrite_pcap(SAMPLE, parts[i], frames=cut)
    s.send(parts[0])
    s.wait_ready(200, timeout=3)
    reasons = s.wait_ready(503, timeout=STALE + 5)                # nothing sent: the feed goes stale
    assert "not heard for" in json.dumps(reasons.get("lines")), (reasons, s.lines)
    s.send(parts[1])
    s.wait_ready(200, timeout=3)                                  # it resumed
    mark = len(s.lines)
    s.send(parts[2])
    s.wait_line(r"session TEST000001 ended", mark)
    filed = s.session_dir("TEST000001")
    summary = json.loads((filed / "summary.json").read_text())
    assert summary["messages"] == 19_999 and summary["end_of_session"] == ["TEST000001"]
    assert summary["session_date"]["date"] and filed.name == f"{summary['session_date']['date']}-TEST000001"
    _same_tables(filed, _replay(SAMPLE, tmp_path / "r1", [A, B]))
    # counters are per session: the finished session's stay until the next session's first frame
    assert s.metric("appliance_messages_total") == summary["messages"]
    assert s.metric("appliance_sessions_completed_total") == 1
    assert s.metric("appliance_restarts_total") == 0
    assert s.metric("appliance_tables_written_bytes_total") >= sum(p.stat().st_size for p in filed.iterdir()
                                                                   if p.name != "summary.json")
    assert s.metric("appliance_recording_written_bytes_total") > 1_000_000
    assert s.metric("appliance_disk_free_bytes", f'{{directory="{s.rec}",role="recording"}}') > 0
    assert any(m.startswith("STATUS=session TEST000001 filed") for m in s.messages), s.messages


@pytest.mark.root
@pytest.mark.netns
def test_more_sessions_fresh_books_flat_memory(served, tmp_path):
    s = served
    windows, rss = [], []
    for k in range(2, 6):
        name = f"TEST{k:06d}"
        pcap = tmp_path / f"{name}.pcap"
        rewrite_pcap(SAMPLE, pcap, name.encode())
        up, m = s.wait_line(r"^appliance: rings were down for ([\d.]+) s .*\(rss (\d+) MiB\)",
                            max(0, len(s.lines) - 40))
        windows.append(float(m.group(1)))
        print(m.group(0))
        rss.append(int(m.group(2)))
        mark = len(s.lines)
        s.send(pcap)
        s.wait_line(rf"session {name} ended", mark)
        filed = s.session_dir(name)
        summary = json.loads((filed / "summary.json").read_text())
        assert summary["messages"] == 19_999 and [x["session"] for x in summary["sessions"]] == [name]
        _same_tables(filed, _replay(pcap, tmp_path / f"r{k}", [A, B]))
        assert s.metric("appliance_messages_total") == 19_999            # fresh books: not 2 x 19,999
        s.lines[up] = s.lines[up].replace("rings were down", "(seen) rings were down")
    print(f"between-sessions windows {windows} s; rss after sessions 1..4 {rss} MiB")
    assert max(windows) < 30
    assert max(rss[1:]) - rss[0] < 64, rss                        # MiB: flat, not growing by the tables each time
    assert s.metric("appliance_sessions_completed_total") == 5


@pytest.mark.root
@pytest.mark.netns
def test_sighup_adds_a_feed_line(served, tmp_path):
    s = served
    s.wait_line(r"^appliance: rings were down for", max(0, len(s.lines) - 40))
    s.write_config([A, B, C])
    mark = len(s.lines)
    s.proc.send_signal(signal.SIGHUP)
    s.wait_line(r"restarts now with the reloaded config", mark)
    s.wait_line(r"capturing on lab0", mark)
    assert any(m.startswith("RELOADING=1") for m in s.messages)
    pcap = tmp_path / "TEST000006.pcap"
    rewrite_pcap(SAMPLE, pcap, b"TEST000006", move={B: C})          # line B now arrives on the new group
    mark = len(s.lines)
    s.send(pcap)
    s.wait_line(r"session TEST000006 ended", mark)
    filed = s.session_dir("TEST000006")
    summary = json.loads((filed / "summary.json").read_text())
    lines = {line["group"]: line["packets"] for line in summary["lines"]}
    assert lines.get(C, 0) > 4_000 and lines.get(A, 0) > 4_000, summary["lines"]
    assert summary["messages"] == 19_999
    _same_tables(filed, _replay(pcap, tmp_path / "r6", [A, B, C]))


@pytest.mark.root
@pytest.mark.netns
def test_retention_keeps_recordings_under_the_budget(served):
    s = served
    time.sleep(2.5)                                               # a retention pass after the last session
    ours = s.ours()
    assert sum(p.stat().st_size for p in ours) <= 1 << 20, [(p.name, p.stat().st_size) for p in ours]
    deleted = [line for line in s.lines if "retention deleted" in line]
    assert len(deleted) >= 20 and all("budget" in line for line in deleted)
    assert s.metric("appliance_retention_deleted_files_total") == len(deleted)
    assert (s.rec / "notes.txt").exists() and (s.rec / "keep-me.pcap").exists()


@pytest.mark.root
@pytest.mark.netns
def test_sigterm_mid_session_files_it_and_leaves_nothing_attached(served, tmp_path):
    s = served
    part = tmp_path / "part.pcap"
    rewrite_pcap(SAMPLE, part, b"TEST000007", frames=slice(0, 3000))
    s.send(part)
    deadline = time.monotonic() + 10
    while not 0 < s.metric("appliance_messages_total") < 19_999:      # this session's counts, decoded
        assert time.monotonic() < deadline, "the session's frames were not decoded"
        time.sleep(0.2)
    mark = len(s.lines)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(60) == 0, "\n".join(s.lines)
    time.sleep(0.3)
    s.wait_line(r"session TEST000007 stopped by SIGTERM, no end of session", mark, timeout=5)
    summary = json.loads((s.session_dir("TEST000007") / "summary.json").read_text())
    assert summary["end_of_session"] == [] and summary["messages"] > 0
    assert summary["capture"]["stop_reason"] == "SIGTERM"
    link = subprocess.run(["ip", "-n", s.lab.name, "-d", "-j", "link", "show", "dev", "lab0"], capture_output=True,
                          text=True, check=True).stdout
    assert "xdp" not in json.loads(link)[0], link
    assert any(m.startswith("STOPPING=1") for m in s.messages), s.messages
    assert sum(m.startswith("WATCHDOG=1") for m in s.messages) >= 10, s.messages
    state = json.loads((s.root / "state" / "serve-state.json").read_text())
    assert state["running"] is False and state["sessions_completed"] == 7
    assert not list(s.tables.glob("incoming-*"))
