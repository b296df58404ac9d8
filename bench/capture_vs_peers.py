#!/usr/bin/env python3
"""Live capture: our engines against tcpdump, netsniff-ng and an XDP_DROP program, same traffic, one run.

    .venv/bin/python bench/capture_vs_peers.py [--rates 50000,100000,200000,top] [--seconds 3]
                                               [--receivers none,xdp-drop,tcpdump,netsniff-ng,tpacket,tpacket2,xdp]

Needs root (it makes a network namespace) and takes about 2 minutes (longer the first time: the feed is
generated, and numba may compile the capture kernels).  Do not run it beside another heavy job: the machine has
two cores and the figures are per core.  A tool that is not installed gets an "absent" row.

Traffic.  A synthetic feed from the project's generator (2.5 M ITCH messages, 1,000 instruments, A/B lines
233.54.12.1:26400 and 233.54.12.2:26400: 631,530 frames of ~310 bytes, 206 MB), written once to bench/data/.
It is sized so that even the top-speed run lasts about two seconds without looping the file (a second pass would
repeat every sequence number and our decoder would take its cheap duplicate path).  At a fixed rate R each
receiver gets the first R x --seconds frames (tcpreplay --limit --pps R --timer=nano), at top speed the whole
file (--topspeed).  tcpreplay sends from lab1 pinned to CPU 0; every receiver listens on lab0 pinned to CPU 1,
inside the namespace "appl-bench" (appliance.capture.lab.Lab: a 4-queue veth pair), deleted on the way out.

Receivers, started before the traffic and stopped (SIGINT) after it, in this order at every rate:

* none: nobody listens; the stack discards the multicast (received = lab0 rx_packets);
* xdp-drop: ``SEC("xdp") xdp_drop_all`` returning XDP_DROP, built with clang -O2 -target bpf and attached with
  ``ip link set dev lab0 xdpdrv obj F sec xdp`` (received = ethtool -S rx_queue_N_xdp_packets; detached after);
* tcpdump -i lab0 -w /dev/null, its defaults (libpcap TPACKET_V3, 2 MB buffer, 1 s block timeout): received =
  "packets captured", drops = "packets dropped by kernel";
* netsniff-ng -i lab0 -o /dev/null -s -A -Q -S 64MiB (see Netsniff for why these flags): received = "packets
  incoming", drops = "packets failed filter (out of space)";
* ours tpacket / ours tpacket2 / ours xdp: ``appliance capture --engine tpacket|xdp --no-stop-at-end
  --hot-cpu 1`` (started with CPUs 0 and 1 allowed) on both lines (tpacket: TPACKET_V3, the default; tpacket2: ``--tpacket-version 2``), its CSV files written to a
  temporary directory: received = summary.json capture.counters.ring_frames, drops = capture.drops,
  receive-to-book latency = capture.latency.  Ours decodes every frame, builds every book and
  writes bbo/trades/vwap rows; tcpdump and netsniff-ng copy frames to /dev/null.

Every row also gives "veth drops": lab1 tx_dropped + lab0 rx_dropped, frames the veth pair counted as lost
(it counts there, too, the frames an XDP redirect could not hand to a full AF_XDP ring).

CPU, in microseconds per received frame.  The window opens just before tcpreplay starts and closes DRAIN_SECONDS
after it ends (longer than tcpdump's 1 s block timeout, so every receiver has emptied its ring).

* proc: the receiver process (scheduler run time of all its threads, /proc/PID/task/*/schedstat; exact, where
  /proc/PID/stat's utime+stime are 4 ms tick samples on this kernel).  Ours: the capture process -- the hot
  thread (pinned to the receive core with --hot-cpu) and the control thread;
* cold: the receiver's child processes, measured the same way.  Ours: the output process that formats and
  writes the CSV tables from the shared row rings (the cold side), placed on the sending core (the only other
  one here) -- so moving work off the hot core shows, instead of vanishing;
* cpu1: the receive core busy (window minus the idle, iowait and steal time /proc/stat gives for cpu1; on this
  NO_HZ_IDLE kernel idle time is measured at idle entry and exit, whereas /proc/stat's user/system/softirq
  columns are tick samples that alias with the 2 ms block timer and the fixed send periods: they read 0.2 s
  where the receiver alone had run 0.45 s, and softirq figures varied 0-1 s between identical runs);
* cpu0: the sending core busy, measured the same way.  On veth the kernel's half of receiving -- netif_rx and
  the packet taps (the copy into a TPACKET ring), or the veth NAPI poll with the XDP program and its copy into
  the UMEM, and the stack discarding the multicast -- runs in the softirq of the core that transmitted, so it is
  on CPU 0 inside tcpreplay's sends, not on the receive core.  The NET_RX column proves it: the share of
  NET_RX softirqs (/proc/softirqs) that ran on cpu0 / cpu1.  (A real NIC runs it on the core its interrupt is
  steered to.)  tcpreplay sleeps between frames (--timer=nano) so cpu0 is not pegged at a fixed rate;
* +cost: cpu0 + cpu1 per frame minus the same for "none" at the same rate: what the receiver costs the machine,
  kernel and process, beyond nobody listening.  A difference of two noisy figures: repeated "none" runs differ
  by about 0.2 us/frame at fixed rates (tcpreplay's sleeps), less at top speed where cpu0 is saturated;
* other % cpu0/1: each core's busy time outside tcpreplay (cpu0) or the receiver process (cpu1), as % of the
  window: kernel threads (e.g. writeback of our CSV files), wakeups, and other people's jobs on this shared
  machine -- a large value means that row's figures are polluted.

Ratios ours / tcpdump are printed at every rate for proc, cpu1 and +cost (+cost only where tcpdump's exceeds
the noise).  The figures vary by about +-15% run to run (see /work/shared/notes/platform-facts.md); at top
speed the rate is the sender's, which shares CPU 0 with the kernel's receive path.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"
NS = "appl-bench"
TX_CPU, RX_CPU = 0, 1
DRAIN_SECONDS = 1.2            # after the last frame: > tcpdump's 1 s TPACKET_V3 block timeout
NOISE_US = 0.25                # +cost below this is within run-to-run noise (see the docstring)
READY_SECONDS = 15.0           # a peer tool must be listening within this
OURS_READY_SECONDS = 900.0     # a first run compiles the ring and decode kernels (minutes on this machine)
USER_HZ = os.sysconf("SC_CLK_TCK")
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
CAPTURE_ARGS: list[str] = []          # --capture-args: extra options for our capture rows (e.g. --idle nap)
ALL_RECEIVERS = ("none", "xdp-drop", "tcpdump", "netsniff-ng", "tpacket", "tpacket2", "xdp", "xdp-spin")
XDP_DROP_C = """\
struct xdp_md;
#define XDP_DROP 1
__attribute__((section("xdp"), used)) int xdp_drop_all(struct xdp_md *c) { return XDP_DROP; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


class Absent(Exception):
    """The receiver's tool is not installed: its row says so."""


class Failed(Exception):
    """The receiver did not start or did not report: its row says why."""


# -- the feed -------------------------------------------------------------------------------------------------
def feed_pcap(messages: int, seed: int) -> tuple[Path, int, list[str]]:
    """(pcap, frames in it, feed lines), generated once into bench/data/."""
    from appliance.gen import write_feed
    from appliance.gen.spec import FeedSpec

    spec = FeedSpec(seed=seed, messages=messages, instruments=1_000, ab=True)
    path = DATA / f"capture-{messages // 1000}k-ab-seed{seed}.pcap"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        DATA.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        manifest = write_feed(tmp, spec, fmt="pcap")
        tmp.rename(path)
        meta.write_text(json.dumps({"frames": manifest.frames, "messages": manifest.messages}))
        print(f"generated {path.name}: {manifest.frames:,} frames, {path.stat().st_size / 1e6:.0f} MB in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return path, json.loads(meta.read_text())["frames"], [spec.line_a, spec.line_b]


# -- CPU accounting ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    at: float                                # time.monotonic()
    idle: dict[int, float]                   # cpu -> idle + iowait + steal seconds (/proc/stat)
    net_rx: dict[int, int]                   # cpu -> NET_RX softirqs run (/proc/softirqs)
    receiver_ns: int
    cold_ns: int                             # the receiver's child processes (ours: the output process)


def idle_seconds() -> dict[int, float]:
    """Per CPU, the time it did not run anything.  On this NO_HZ_IDLE kernel /proc/stat's idle and iowait are
    measured at idle entry and exit (get_cpu_idle_time_us), whereas its busy columns are samples taken at the
    4 ms tick, which alias with the 2 ms block timer and the fixed send periods."""
    cores = {}
    with open("/proc/stat") as fh:
        for line in fh:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                f = dict(zip(STAT_FIELDS, map(int, m.group(2).split())))
                cores[int(m.group(1))] = (f["idle"] + f["iowait"] + f["steal"]) / USER_HZ
    return cores


def net_rx_softirqs() -> dict[int, int]:
    with open("/proc/softirqs") as fh:
        for line in fh:
            if line.split()[0] == "NET_RX:":
                return dict(enumerate(map(int, line.split()[1:])))
    return {}


def run_time_ns(pid: int | None) -> int:
    """Scheduler run time of every thread of ``pid`` (0 once it is gone): exact, where /proc/PID/stat's
    utime+stime are tick samples."""
    total = 0
    if pid is None:
        return total
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def children(pid: int | None) -> list[int]:
    """Every descendant of ``pid`` (/proc/PID/task/*/children)."""
    found, todo = [], [pid] if pid else []
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def sample(pid: int | None) -> Sample:
    return Sample(time.monotonic(), idle_seconds(), net_rx_softirqs(), run_time_ns(pid),
                  sum(run_time_ns(kid) for kid in children(pid)))


def busy_seconds(a: Sample, b: Sample, cpu: int) -> float:
    return max(0.0, (b.at - a.at) - (b.idle[cpu] - a.idle[cpu]))


# -- helpers around the namespace --------------------------------------------------------------------------------
def link_counters(lab) -> dict[str, int]:
    """lab0's received frames, and the frames the veth pair dropped (lab1 tx_dropped + lab0 rx_dropped)."""
    out = subprocess.run(["ip", "-n", lab.name, "-s", "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    stats = {link["ifname"]: link["stats64"] for link in json.loads(out) if "stats64" in link}
    return {"rx_packets": stats["lab0"]["rx"]["packets"],
            "veth_drops": stats["lab1"]["tx"]["dropped"] + stats["lab0"]["rx"]["dropped"]}


def xdp_counters(lab) -> dict[str, int]:
    out = subprocess.run(lab.netns_cmd(["ethtool", "-S", "lab0"]), capture_output=True, text=True,
                         check=True).stdout
    totals = {"xdp_packets": 0, "xdp_drops": 0}
    for name, value in re.findall(r"rx_queue_\d+_(xdp_packets|xdp_drops):\s+(\d+)", out):
        totals[name] += int(value)
    return totals


class Spawned:
    """A tool started in the namespace on the receive core, its output in files we can watch."""

    def __init__(self, lab, argv: list[str], workdir: Path, tag: str, cpus: str = str(RX_CPU)):
        self.out, self.err = workdir / f"{tag}.out", workdir / f"{tag}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            # ip netns exec and taskset exec, so the pid is the tool's own.
            self.proc = subprocess.Popen(lab.netns_cmd(["taskset", "-c", cpus, *argv]), stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_for(self, marker: str, timeout: float) -> None:
        """Until ``marker`` shows in its output (it is listening)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise Failed(f"exited with {self.proc.returncode}: {self.last_line()}")
            if marker in self.text():
                return
            time.sleep(0.05)
        raise Failed(f"not ready after {timeout:.0f} s: {self.last_line()}")

    def stop(self, timeout: float) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise Failed(f"did not stop within {timeout:.0f} s of SIGINT (killed)") from None
        return self.text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def last_line(self) -> str:
        lines = [ln for ln in self.text().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "no output"


def _count(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    if m is None:
        raise Failed(f"no /{pattern}/ in its statistics")
    return int(m.group(1))


# -- receivers ---------------------------------------------------------------------------------------------------
@dataclass
class Received:
    frames: int
    drops: str                               # as the receiver reports them
    latency: dict | None = None              # ours: summary.json capture.latency
    feed: dict = field(default_factory=dict)  # ours: messages, gaps


class Receiver:
    """Started before the traffic, stopped after it; ``pid`` is the process whose CPU is counted (None: the
    kernel alone)."""

    name = ""
    tools: tuple[str, ...] = ()

    def check(self) -> None:
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            raise Absent(f"{', '.join(missing)} not installed")

    def start(self, lab, workdir: Path) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None

    def stop(self) -> Received:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Undo whatever start did, after a failure (stop already does it on success)."""


class Nobody(Receiver):
    name, tools = "none", ("ip",)

    def start(self, lab, workdir):
        self.lab, self.before = lab, link_counters(lab)

    def stop(self):
        after = link_counters(self.lab)
        return Received(after["rx_packets"] - self.before["rx_packets"], "stack discards all")


class XdpDrop(Receiver):
    name, tools = "xdp-drop", ("clang", "ip", "ethtool")

    def start(self, lab, workdir):
        self.lab, obj = lab, workdir / "xdp_drop.o"
        if not obj.exists():
            (workdir / "xdp_drop.c").write_text(XDP_DROP_C)
            done = subprocess.run(["clang", "-O2", "-target", "bpf", "-c", str(workdir / "xdp_drop.c"), "-o",
                                   str(obj)], capture_output=True, text=True)
            if done.returncode:
                raise Failed(f"clang: {done.stderr.strip().splitlines()[-1:]}")
        done = subprocess.run(["ip", "-n", lab.name, "link", "set", "dev", "lab0", "xdpdrv", "obj", str(obj),
                               "sec", "xdp"], capture_output=True, text=True)
        if done.returncode:
            raise Failed(f"attach: {done.stderr.strip()}")
        self.before = xdp_counters(lab)

    def stop(self):
        after = xdp_counters(self.lab)
        self.cleanup()
        n = after["xdp_packets"] - self.before["xdp_packets"]
        return Received(n, f"xdp_drops {after['xdp_drops'] - self.before['xdp_drops']:,} (by design)")

    def cleanup(self):
        subprocess.run(["ip", "-n", self.lab.name, "link", "set", "dev", "lab0", "xdpdrv", "off"],
                       capture_output=True)


class Tool(Receiver):
    """A process on the receive core."""

    argv: list[str] = []
    marker = ""                    # what it prints once it is listening
    stop_seconds = 10.0
    cpus = str(RX_CPU)

    def start(self, lab, workdir):
        self.spawned = Spawned(lab, self.argv, workdir, self.name.replace(" ", "-"), self.cpus)
        self.spawned.wait_for(self.marker, self.ready_seconds())

    def ready_seconds(self) -> float:
        return READY_SECONDS

    @property
    def pid(self):
        return self.spawned.pid

    def stop(self):
        return self.parse(self.spawned.stop(self.stop_seconds))

    def cleanup(self):
        if getattr(self, "spawned", None) is not None:
            self.spawned.kill()


class Tcpdump(Tool):
    name, tools = "tcpdump", ("tcpdump", "taskset")
    argv = ["tcpdump", "-i", "lab0", "-w", "/dev/null"]
    marker = "listening on lab0"

    def parse(self, text):
        dropped = _count(r"(\d+) packets dropped by kernel", text)
        return Received(_count(r"(\d+) packets captured", text), f"kernel {dropped:,}")


class Netsniff(Tool):
    name, tools = "netsniff-ng", ("netsniff-ng", "taskset")
    # -S: its default ring is sized for the link speed veth reports (2.5 GB, locked and populated, 3 s to set
    # up); 64 MiB is what our TPACKET_V3 engine maps.  -A, -Q: leave socket memory sysctls and IRQs alone.
    argv = ["netsniff-ng", "-i", "lab0", "-o", "/dev/null", "-s", "-A", "-Q", "-S", "64MiB"]
    marker = "Running!"

    def parse(self, text):
        dropped = _count(r"(\d+)\s+packets failed filter \(out of space\)", text)
        unread = _count(r"\((\d+) unread on exit\)", text)
        return Received(_count(r"(\d+)\s+packets incoming", text),
                        f"out of space {dropped:,}" + (f", unread {unread:,}" if unread else ""))


class Ours(Tool):
    tools = ("taskset",)
    marker = "capturing on"
    stop_seconds = 120.0           # it writes the rest of its CSV files and summary.json after SIGINT
    # The hot thread alone on the receive core; the output process (the cold side: CSV formatting and writing)
    # and the control thread on the sending core -- a 2-core machine has no third.  Its CPU is the "cold" column.
    cpus = f"{TX_CPU},{RX_CPU}"

    def __init__(self, engine: str, lines: list[str], name: str | None = None, options: tuple[str, ...] = ()):
        self.engine, self.name, self.lines, self.options = engine, f"ours {name or engine}", lines, options

    def ready_seconds(self):
        return OURS_READY_SECONDS

    def start(self, lab, workdir):
        self.out_dir = workdir / f"out-{self.name.split()[-1]}"
        shutil.rmtree(self.out_dir, ignore_errors=True)
        feeds = [arg for line in self.lines for arg in ("--feed", line)]
        self.argv = [sys.executable, "-m", "appliance", "capture", "--iface", "lab0", *feeds, "--engine",
                     self.engine, *self.options, "--out", str(self.out_dir), "--no-stop-at-end", "--hot-cpu", str(RX_CPU),
                     *CAPTURE_ARGS]
        super().start(lab, workdir)

    def parse(self, text):
        path = self.out_dir / "summary.json"
        if not path.exists():
            raise Failed(f"no summary.json: {self.spawned.last_line()}")
        summary = json.loads(path.read_text())
        shutil.rmtree(self.out_dir, ignore_errors=True)         # its CSV files are large and not needed
        cap = summary["capture"]
        return Received(cap["counters"]["ring_frames"], ", ".join(f"{k} {v:,}" for k, v in cap["drops"].items()),
                        cap["latency"],
                        {"messages": summary["messages"], "gaps": len(summary["gaps"]),
                         "packets": summary["packets"]})


def receivers(names: list[str], lines: list[str]) -> list[Receiver]:
    made = {"none": Nobody, "xdp-drop": XdpDrop, "tcpdump": Tcpdump, "netsniff-ng": Netsniff,
            "tpacket": lambda: Ours("tpacket", lines),
            "tpacket2": lambda: Ours("tpacket", lines, "tpacket2", ("--tpacket-version", "2")),
            "xdp": lambda: Ours("xdp", lines),
            "xdp-spin": lambda: Ours("xdp", lines, "xdp-spin", ("--idle", "spin"))}
    return [made[n]() for n in names]


# -- one run ------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    rate: str
    receiver: str
    sent: int = 0
    pps: float = 0.0
    got: Received | None = None
    link_drops: int = 0              # frames veth itself dropped (lab1 tx_dropped + lab0 rx_dropped)
    proc_s: float | None = None      # receiver process CPU
    cold_s: float | None = None      # its child processes' CPU (ours: the output process)
    cpu0_s: float = 0.0              # sending core busy
    cpu1_s: float = 0.0              # receive core busy
    sender_s: float = 0.0            # tcpreplay's CPU (on cpu0)
    net_rx: tuple[int, int] = (0, 0)  # NET_RX softirqs on cpu0, cpu1
    window_s: float = 0.0
    note: str = ""                   # absent / failed

    def us(self, seconds: float | None) -> float | None:
        """``seconds`` of CPU per received frame, in microseconds."""
        if seconds is None or not self.got or not self.got.frames:
            return None
        return seconds / self.got.frames * 1e6


def send(lab, pcap: Path, frames: int, rate: int | None) -> tuple[int, float, float]:
    """tcpreplay the first ``frames`` frames out of lab1 on the sending core; (frames sent, pps reached, its CPU
    seconds: the scheduler's total for it, so exact, and including the receive softirq run inside its sends).

    --timer=nano: between frames tcpreplay sleeps instead of spinning on gettimeofday (its default), so the
    sending core's busy time is the sender's work plus the kernel's receive path, not 100% whatever happens."""
    from appliance.capture.send import parse_stats

    pace = ["--topspeed"] if rate is None else [f"--pps={rate}", "--timer=nano"]
    argv = lab.netns_cmd(["taskset", "-c", str(TX_CPU), "tcpreplay", "--intf1=lab1", *pace, f"--limit={frames}",
                          str(pcap)])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        raise SystemExit(f"tcpreplay failed: {lines[-1] if lines else done.returncode}")
    result = parse_stats(done.stdout, "lab1")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result.sent, result.pps, cpu


def measure(lab, receiver: Receiver, pcap: Path, frames: int, rate: int | None, seconds: float,
            workdir: Path) -> Row:
    row = Row("top" if rate is None else f"{rate // 1000}k", receiver.name)
    try:
        receiver.check()
    except Absent as err:
        row.note = f"absent ({err})"
        return row
    count = frames if rate is None else min(frames, int(rate * seconds))
    drops_before = link_counters(lab)["veth_drops"]
    try:
        receiver.start(lab, workdir)
        before = sample(receiver.pid)
        row.sent, row.pps, row.sender_s = send(lab, pcap, count, rate)
        time.sleep(DRAIN_SECONDS)
        after = sample(receiver.pid)
        row.got = receiver.stop()
    except Failed as err:
        receiver.cleanup()
        row.note = f"failed: {err}"
        return row
    except BaseException:
        receiver.cleanup()
        raise
    row.link_drops = link_counters(lab)["veth_drops"] - drops_before
    row.window_s = after.at - before.at
    row.proc_s = (after.receiver_ns - before.receiver_ns) / 1e9 if receiver.pid else None
    row.cold_s = (after.cold_ns - before.cold_ns) / 1e9 if receiver.pid else None
    row.cpu0_s, row.cpu1_s = busy_seconds(before, after, TX_CPU), busy_seconds(before, after, RX_CPU)
    row.net_rx = (after.net_rx[TX_CPU] - before.net_rx[TX_CPU], after.net_rx[RX_CPU] - before.net_rx[RX_CPU])
    return row


# -- report -------------------------------------------------------------------------------------------------------
def _cell(value: float | None, width: int = 6) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:>{width}.2f}"


def above_none(rows: list[Row]) -> dict[int, float]:
    """Per row (by id), cpu0 + cpu1 per received frame minus the same for nobody listening at that rate."""
    base = {r.rate: r.us(r.cpu0_s + r.cpu1_s) for r in rows if r.receiver == "none" and r.got}
    out = {}
    for r in rows:
        mine = r.us(r.cpu0_s + r.cpu1_s) if r.got else None
        if mine is not None and base.get(r.rate) is not None:
            out[id(r)] = mine - base[r.rate]
    return out


def print_table(rows: list[Row]) -> None:
    extra = above_none(rows)
    print(f"\n{'rate':>4s} {'receiver':13s} {'sent':>9s} {'pps sent':>9s} {'received':>9s} {'veth':>5s} "
          f"{'proc':>6s} {'cold':>6s} {'cpu1':>6s} {'cpu0':>6s} {'+cost':>6s} {'other %':>7s} {'NET_RX':>7s}  drops as "
          "the receiver reports them")
    print(f"{'':4s} {'':13s} {'':>9s} {'':>9s} {'':>9s} {'drops':>5s} {'---- us of CPU per received frame ----':>34s} "
          f"{'cpu0/1':>7s} {'on 0/1':>7s}")
    for r in rows:
        head = f"{r.rate:>4s} {r.receiver:13s}"
        if r.note:
            print(f"{head} {r.note}")
            continue
        other = (f"{max(0.0, r.cpu0_s - r.sender_s - (r.cold_s or 0.0)) / r.window_s * 100:.0f}/"
                 f"{max(0.0, r.cpu1_s - (r.proc_s or 0.0)) / r.window_s * 100:.0f}")
        where = f"{r.net_rx[0] * 100 // max(1, sum(r.net_rx))}/{r.net_rx[1] * 100 // max(1, sum(r.net_rx))}%"
        print(f"{head} {r.sent:>9,} {r.pps:>9,.0f} {r.got.frames:>9,} {r.link_drops:>5,} {_cell(r.us(r.proc_s))} {_cell(r.us(r.cold_s))} "
              f"{_cell(r.us(r.cpu1_s))} {_cell(r.us(r.cpu0_s))} {_cell(extra.get(id(r)))} {other:>7s} "
              f"{where:>7s}  {r.got.drops}")


def print_latency(rows: list[Row]) -> None:
    ours = [r for r in rows if r.got and r.got.latency is not None]
    if not ours:
        return
    print("\nours, receive to book in us (upper edges of the histogram buckets; max exact):")
    print(f"{'rate':>4s} {'engine':13s} {'samples':>9s} {'p50':>8s} {'p99':>8s} {'p99.9':>8s} {'max':>9s} "
          f"{'packets':>9s} {'messages':>10s} {'gaps':>5s}")
    for r in ours:
        lat, feed = r.got.latency, r.got.feed
        cells = [f"{lat.get(k, 0) / 1e3:>{w},.1f}" for k, w in (("p50_ns", 8), ("p99_ns", 8), ("p99_9_ns", 8),
                                                                 ("max_ns", 9))]
        print(f"{r.rate:>4s} {r.receiver:13s} {lat.get('samples', 0):>9,} {' '.join(cells)} "
              f"{feed['packets']:>9,} {feed['messages']:>10,} {feed['gaps']:>5,}")


def print_ratios(rows: list[Row]) -> None:
    print("\nCPU per received frame, ours / tcpdump (proc: the receiving process; cpu1: the receive core; "
          "+cost: both cores, above nobody listening):")
    extra = above_none(rows)
    by = {(r.rate, r.receiver): r for r in rows if r.got and r.got.frames}
    if not any(k[1] == "tcpdump" for k in by):
        print("  no tcpdump row to compare with")
    for rate in dict.fromkeys(r.rate for r in rows):
        base = by.get((rate, "tcpdump"))
        for engine in ("ours tpacket", "ours tpacket2", "ours xdp", "ours xdp-spin"):
            ours = by.get((rate, engine))
            if base is None or ours is None:
                continue
            pairs = (("proc", ours.us(ours.proc_s), base.us(base.proc_s)),
                     ("cpu1", ours.us(ours.cpu1_s), base.us(base.cpu1_s)),
                     ("+cost", extra.get(id(ours)), extra.get(id(base))))
            parts = []
            for label, a, b in pairs:
                if a is None or b is None:
                    parts.append(f"{label} -")
                elif label == "+cost" and b < NOISE_US:
                    parts.append(f"{label} - (tcpdump's {b:.2f} us is within noise)")
                else:
                    parts.append(f"{label} {a / b:.1f}x")
            print(f"  {rate:>4s} {engine:13s} " + ", ".join(parts))


def background(seconds: float = 1.0) -> str:
    a = sample(None)
    time.sleep(seconds)
    b = sample(None)
    busy = [busy_seconds(a, b, cpu) / (b.at - a.at) * 100 for cpu in (TX_CPU, RX_CPU)]
    return f"cpu{TX_CPU} {busy[0]:.0f}% busy, cpu{RX_CPU} {busy[1]:.0f}% busy"


def versions() -> str:
    found = []
    for tool, argv, pattern in (("tcpdump", ["tcpdump", "--version"], r"tcpdump version (\S+)"),
                                ("libpcap", ["tcpdump", "--version"], r"libpcap version (\S+)"),
                                ("netsniff-ng", ["netsniff-ng", "-v"], r"netsniff-ng (\S+)"),
                                ("tcpreplay", ["tcpreplay", "-V"], r"tcpreplay version: (\S+)")):
        try:
            done = subprocess.run(argv, capture_output=True, text=True)
        except OSError:
            found.append(f"{tool} absent")
            continue
        m = re.search(pattern, done.stdout + done.stderr)
        found.append(f"{tool} {m.group(1) if m else '?'}")
    return ", ".join(found)


# -- main ---------------------------------------------------------------------------------------------------------
def parse_rates(text: str) -> list[int | None]:
    return [None if r == "top" else int(r.replace("_", "").replace("k", "000")) for r in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=parse_rates, default=parse_rates("50000,100000,200000,top"),
                        help="frames/s, comma separated; 'top' for tcpreplay --topspeed (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="traffic per fixed-rate run (default 3)")
    parser.add_argument("--receivers", default=",".join(ALL_RECEIVERS),
                        help=f"comma separated, run in this order at each rate (default {','.join(ALL_RECEIVERS)})")
    parser.add_argument("--messages", type=int, default=2_500_000, help="ITCH messages in the generated feed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--capture-args", default="", metavar="ARGS",
                        help="extra options for our capture rows, e.g. '--idle nap --nap-us 200'")
    args = parser.parse_args()
    CAPTURE_ARGS.extend(args.capture_args.split())
    names = args.receivers.split(",")
    unknown = set(names) - set(ALL_RECEIVERS)
    if unknown:
        parser.error(f"unknown receivers {', '.join(sorted(unknown))}; choose from {', '.join(ALL_RECEIVERS)}")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes a network namespace")
    from appliance.capture.lab import Lab

    pcap, frames, lines = feed_pcap(args.messages, args.seed)
    os.sched_setaffinity(0, {TX_CPU})      # keep this script's own wakeups off the receive core
    print(f"feed: {pcap.name}, {frames:,} frames, lines {' and '.join(lines)}; {versions()}")
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; before the runs: {background()}")
    lab = Lab(NS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="capture-vs-peers-") as tmp:
        try:
            if lab.exists():
                lab.down()                 # a lab left by an interrupted run of this script
            lab.up()
            time.sleep(1.0)                # let the namespace's setup work finish
            for rate in args.rates:
                for receiver in receivers(names, lines):
                    row = measure(lab, receiver, pcap, frames, rate, args.seconds, Path(tmp))
                    rows.append(row)
                    print(f"  {row.rate:>4s} {row.receiver:13s} "
                          + (row.note or f"sent {row.sent:,} at {row.pps:,.0f} pps, received {row.got.frames:,}"),
                          flush=True)
            after = background()           # before deleting the namespace: its teardown keeps a core busy
        finally:
            lab.down()
    print_table(rows)
    print_latency(rows)
    print_ratios(rows)
    print(f"\nafter the runs: {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
