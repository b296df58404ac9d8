"""``appliance serve``: live in a lab namespace (veth lab0 <-> lab1), and its pieces without privileges.

The lab tests share one serve process (module fixture ``served``), in order: the first session sent in three
parts (ready, stale, ready again, ended and filed); a real Prometheus server in the namespace scraping it
(``promtest``); four more sessions (made here from pcaps/sample.pcap with another MoldUDP64 session name) with
the between-sessions window and the RSS after each; SIGHUP adding a feed line; retention under a small budget;
SIGTERM in the middle of a session.  Then a second serve process, SIGKILLed in the middle of a session and
started again with the same config.  systemd's notify protocol is a real AF_UNIX datagram socket named by
NOTIFY_SOCKET.  The rest (retention, directory naming, incomplete directories, the state file, the unit file,
config errors) runs unprivileged.
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
from promtest import get, have_prometheus, promtool_check, query, start_prometheus, stop, wait_query

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


def test_a_dead_runs_staging_directory_is_filed_as_incomplete(tmp_path):
    from appliance.service import sessions

    mine = sessions.staging_dir(str(tmp_path))                       # this process's: being written
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f"incoming-20260102T030405.000000Z-{dead.pid}"
    killed.mkdir()
    (killed / "bbo.csv").write_text("header\nrow\n")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # a live pid that started after the directory was made did not make it (a reused pid)
        reused = tmp_path / f"incoming-20200101T000000.000000Z-{sleeper.pid}"
        reused.mkdir()
        # a live pid that started before: it may be writing (another serve), left alone
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() + 5))
        writing = tmp_path / f"incoming-{stamp}.000000Z-{sleeper.pid}"
        writing.mkdir()
        # this process's pid, but made before it started: the run before it (PID 1 in a container, every time)
        before = tmp_path / f"incoming-20200101T000000.000000Z-{os.getpid()}"
        before.mkdir()
        assert sessions.leftovers(str(tmp_path)) == sorted([before, reused, killed])
        before.rmdir()
    finally:
        sleeper.kill()
        sleeper.wait()
    moved = sessions.mark_incomplete(killed, "killed")
    assert moved == tmp_path / f"incomplete-20260102T030405.000000Z-{dead.pid}" and not killed.exists()
    note = json.loads((moved / sessions.INCOMPLETE_NOTE).read_text())
    assert note["complete"] is False and note["pid"] == dead.pid and note["files"] == {"bbo.csv": 11}
    assert (moved / "bbo.csv").read_text() == "header\nrow\n"
    again = tmp_path / killed.name                                    # the same name once more: .2
    again.mkdir()
    assert sessions.mark_incomplete(again, "killed").name == moved.name + ".2"
    assert mine.exists() and sessions.leftovers(str(tmp_path)) == sorted([reused, writing])


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
    """The serve process, its stderr lines (read by a thread, with the monotonic time each arrived) and the notify
    datagrams it sent.  ``start`` runs it again with the same config and directories (a restart)."""

    every: list["Served"] = []                    # each one made in this module, so a later test can stop them

    def __init__(self, lab, root: Path, retain_bytes: str = "1M"):
        self.lab, self.root = lab, root
        self.config = root / "appliance.toml"
        self.tables, self.rec = root / "tables", root / "rec"
        self.rec.mkdir()
        for other in ("notes.txt", "keep-me.pcap"):
            (self.rec / other).write_text("not a recording of ours\n")
        self.retain_bytes = retain_bytes
        self.write_config([A, B])
        self.notify_path = root / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self.lines: list[str] = []
        self.stamps: list[float] = []             # time.monotonic() when each line was read
        Served.every.append(self)
        self.start()

    def start(self) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC="2000000")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.lab.netns_cmd(_appliance("serve", "--config", str(self.config))), cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        threading.Thread(target=self._listen, args=(self.proc,), daemon=True).start()

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
            retain_bytes = "{self.retain_bytes}"
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

    def _read(self, proc):
        for line in proc.stderr:
            self.stamps.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))

    def _listen(self, proc):
        while proc.poll() is None:
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
        return get(f"http://127.0.0.1:{PORT}{path}", self.lab.netns_cmd)

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
    if "not heard for" not in json.dumps(reasons.get("lines")):
        # the feed's last frame (capture time) can pass the limit up to a tick (0.2 s) before the lines' heard
        # times (the ticker's clock when it saw their packet counts move) do
        time.sleep(0.5)
        reasons = s.wait_ready(503)
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
def test_prometheus_scrapes_serve_and_promtool_accepts_its_exposition(served, tmp_path):
    """After the first session (its final counts stay exported until the next session's first frame)."""
    s = served
    if have_prometheus():
        pytest.skip(have_prometheus())
    assert s.metric("appliance_sessions_completed_total") == 1, "the first session was not filed"
    wrap, prom = s.lab.netns_cmd, None
    try:
        prom, base = start_prometheus(tmp_path, f"127.0.0.1:{PORT}", wrap)
        value = wait_query(base, 'appliance_messages_total{job="appliance"}', 19_999, wrap=wrap)
        assert value == 19_999, (value, (tmp_path / "prometheus.log").read_text()[-2000:])
        assert query(base, 'up{job="appliance"}', wrap) == 1
        assert query(base, 'appliance_sessions_completed_total{job="appliance"}', wrap) == 1
        assert wait_query(base, 'appliance_serve_phase{job="appliance",phase="capturing"}', 1, wrap=wrap) == 1
        assert query(base, 'sum(appliance_messages_by_type_total{job="appliance"})', wrap) == 19_999
    finally:
        stop(prom)
    status, text = s.get("/metrics")
    assert status == 200
    for name in ("appliance_serve_phase", "appliance_sessions_completed_total", "appliance_restarts_total",
                 "appliance_line_seconds_since_heard", "appliance_disk_free_bytes", "appliance_retention_deleted_files_total",
                 "appliance_recording_written_bytes_total", "appliance_tables_written_bytes_total",
                 "appliance_receive_to_book_latency_seconds_bucket"):
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    # drops by every source summary.json has, the ones only serve's own process can read included (AF_XDP here)
    sources = set(re.findall(r'^appliance_dropped_frames_total\{source="(\w+)"\} 0\.0$', text, re.M))
    assert sources == {"kernel", "recording", "socket", "xdp"}, sources
    done = promtool_check(text)
    assert done.returncode == 0, done.stdout + done.stderr


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


# -- SIGKILL, then the same config started again --------------------------------------------------------------
def _frames(pcap: Path) -> list[bytes]:
    """The frames of a classic pcap (either timestamp resolution), in order."""
    data, out, off = pcap.read_bytes(), [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


def _feed_frames(frames: list[bytes], groups: list[str]) -> list[bytes]:
    """The frames a capture of ``groups`` on FEED_PORT takes (and records): whole IPv4 UDP datagrams to one of
    them.  The sample's IP fragments and its frames with a bad IP or UDP length the XDP program leaves to the
    kernel (``xdp/feed_steer.h``)."""
    want, out = {socket.inet_aton(g) for g in groups}, []
    for f in frames:
        if len(f) < 42 or f[12:14] != b"\x08\x00" or f[23] != 17 or f[30:34] not in want:
            continue
        udp = 14 + (f[14] & 15) * 4
        ip_len, frag = struct.unpack_from(">HxxH", f, 16)
        port, udp_len = struct.unpack_from(">xxHH", f, udp)
        if port == FEED_PORT and not frag & 0x3FFF and 14 + ip_len <= len(f) and 8 <= udp_len <= ip_len - udp + 14:
            out.append(f)
    return out


class Subreaper:
    """This process as the child subreaper (prctl PR_SET_CHILD_SUBREAPER) while in the block: the children of a
    process killed here are re-parented to it, so the test can wait for them and read their exit status."""

    def __enter__(self):
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        if self.libc.prctl(36, 1, 0, 0, 0) != 0:
            pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
        return self

    def __exit__(self, *exc):
        self.libc.prctl(36, 0, 0, 0, 0)

    @staticmethod
    def wait(pid: int, timeout: float) -> int | None:
        """The exit status of an adopted process once it ended (a signal as its negative), None at ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        return None


def _xdp_on_lab0(lab) -> bool:
    link = subprocess.run(["ip", "-n", lab.name, "-d", "-j", "link", "show", "dev", "lab0"], capture_output=True,
                          text=True, check=True).stdout
    return "xdp" in json.loads(link)[0]


@pytest.mark.root
@pytest.mark.netns
def test_sigkill_then_restart_resumes_counts_the_restart_and_keeps_the_recording(lab, tmp_path):
    import psutil

    for other in Served.every:                                    # the module's serve (stopped by the last test)
        if other.proc.poll() is None:
            other.proc.terminate()
            other.proc.wait(60)
    root = tmp_path / "killed"
    root.mkdir()
    first, part, after = tmp_path / "TEST000008.pcap", tmp_path / "TEST000009.pcap", tmp_path / "TEST000010.pcap"
    rewrite_pcap(SAMPLE, first, b"TEST000008")
    rewrite_pcap(SAMPLE, part, b"TEST000009", frames=slice(0, 4000))      # no end of session: killed in it
    rewrite_pcap(SAMPLE, after, b"TEST000010")
    with Subreaper() as reaper:
        s = Served(lab, root, retain_bytes="1G")
        try:
            _killed_and_restarted(s, reaper, tmp_path, first, part, after, psutil)
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait(30)
            s.notify.close()


def _killed_and_restarted(s, reaper, tmp_path, first, part, after, psutil):
    s.wait_line(r"capturing on lab0", timeout=900)
    s.send(first)
    mark, _ = s.wait_line(r"session TEST000008 ended")
    replayed_part = _replay(part, tmp_path / "r-part", [A, B])   # meanwhile the next capture is set up
    part_messages = json.loads((replayed_part / "summary.json").read_text())["messages"]
    s.wait_line(r"^appliance: rings were down for", mark)
    s.send(part)
    deadline = time.monotonic() + 10
    while s.metric("appliance_messages_total") != part_messages:  # every frame sent is decoded (and recorded)
        assert time.monotonic() < deadline, (s.metric("appliance_messages_total"), part_messages)
        time.sleep(0.2)
    children = {" ".join(p.cmdline()): p.pid for p in psutil.Process(s.proc.pid).children()}
    cold = {module: pid for line, pid in children.items() for module in ("appliance.cold.output",
                                                                        "appliance.cold.recording") if module in line}
    assert len(cold) == 2, children
    staging = [p for p in s.tables.iterdir() if p.name.startswith("incoming-")]
    assert len(staging) == 1, staging

    killed_pid, mark = s.proc.pid, len(s.lines)
    s.proc.kill()
    killed_at = time.monotonic()
    assert s.proc.wait(30) == -signal.SIGKILL
    while _xdp_on_lab0(s.lab):                                    # a BPF link: it goes with the last fd
        assert time.monotonic() - killed_at < 5, "the XDP program stayed attached after the SIGKILL"
        time.sleep(0.05)
    xdp_gone = time.monotonic() - killed_at
    # the cold side ends on its own (its life pipe hung up), having written what was published: exit 1, not a signal
    assert {m: reaper.wait(pid, 30) for m, pid in cold.items()} == {m: 1 for m in cold}, "\n".join(s.lines)
    cold_gone = time.monotonic() - killed_at
    s.wait_line(rf"recording process: the capture \(pid {killed_pid}\) ended without finishing", mark, timeout=5)
    s.wait_line(rf"output process: the capture \(pid {killed_pid}\) ended without finishing", mark, timeout=5)
    assert not [line for line in s.lines[mark:] if "Traceback" in line], "\n".join(s.lines[mark:])

    # the recordings before the kill: every feed frame of both sessions, in order, and appliance replay reads them
    files = s.ours()
    assert files and not [p for p in s.rec.iterdir() if p.name.endswith(".part")]
    recorded = [f for p in files for f in _frames(p)]
    sent = _feed_frames(_frames(first) + _frames(part), [A, B])
    taken = json.loads((s.session_dir("TEST000008") / "summary.json").read_text())["frames"]
    assert len(_feed_frames(_frames(first), [A, B])) == taken == 8_322          # what the capture took
    assert len(recorded) == len(sent) and recorded == sent
    back = _replay_files(files, tmp_path / "r-rec")
    summary = json.loads((back / "summary.json").read_text())
    counts = {**summary, **summary["counters"]}
    assert counts["messages"] == 19_999 + part_messages and counts["frames"] == len(sent)
    assert counts["truncated_records"] == 0 and counts["not_feed"] == 0
    # the killed session's staging directory: every row its capture published, no summary.json
    assert not (staging[0] / "summary.json").exists()
    _same_tables(staging[0], replayed_part)

    # the same config again
    mark = len(s.lines)
    s.start()
    i, _ = s.wait_line(r"capturing on lab0", mark, timeout=120)
    up = s.stamps[i]
    print(f"SIGKILL: XDP program gone within {xdp_gone:.2f} s, cold side exited within {cold_gone:.2f} s; restart: "
          f"ready (rings up) {up - s.started_at:.2f} s after the start")
    assert up - s.started_at < 30
    s.wait_line(r"the last run did not stop cleanly; restarts so far: 1", mark, timeout=1)
    s.wait_line(rf"{staging[0].name} holds the tables of a run that did not finish .*filed as incomplete-", mark,
                timeout=1)
    assert not staging[0].exists()
    filed = s.tables / staging[0].name.replace("incoming-", "incomplete-", 1)
    note = json.loads((filed / "incomplete.json").read_text())
    assert note["complete"] is False and note["pid"] == killed_pid and "killed" in note["why"]
    _same_tables(filed, replayed_part)
    assert s.metric("appliance_restarts_total") == 1
    state = json.loads((s.root / "state" / "serve-state.json").read_text())
    assert state["restarts"] == 1 and state["starts"] == 2 and state["running"] is True

    # capture resumes
    mark = len(s.lines)
    s.send(after)
    s.wait_line(r"session TEST000010 ended", mark)
    done = s.session_dir("TEST000010")
    assert json.loads((done / "summary.json").read_text())["messages"] == 19_999
    _same_tables(done, _replay(after, tmp_path / "r-after", [A, B]))
    assert s.metric("appliance_messages_total") == 19_999
    sessions_filed = sorted(p.name for p in s.tables.iterdir() if not p.name.startswith(("incoming-", "incomplete-")))
    assert [n.split("-")[-1] for n in sessions_filed] == ["TEST000008", "TEST000010"], sessions_filed
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(60) == 0, "\n".join(s.lines)
    assert not _xdp_on_lab0(s.lab)
    assert json.loads((s.root / "state" / "serve-state.json").read_text())["running"] is False


def _replay_files(files: list[Path], out: Path) -> Path:
    argv = _appliance("replay", *map(str, files), "--out", str(out), "-q", "--feed", f"{A}:{FEED_PORT}",
                      "--feed", f"{B}:{FEED_PORT}")
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return out
