"""Prometheus metrics: a collector that reads a capture's shared region live, and the service's own numbers.

``CaptureCollector`` reads what the hot side keeps in the region (``cold.rows.Region``: the decoder's counters,
messages by type, the ring counters, the latency histogram, the row rings' control blocks) at every scrape,
plus what the kernel keeps about the capture's process (``/proc/PID``, through psutil) and its interface
(``/proc/PID/net/dev``, which is the interface as seen from the capture's own network namespace).
``ServiceMetrics`` holds the numbers only the service can know (when each feed line was last heard, bytes and
errors of recordings and tables, restarts, the directories whose free space matters); the service sets them.
Both are ``prometheus_client`` collectors: register them in one ``CollectorRegistry``.

The latency histogram.  The hot side counts each sample (whole nanoseconds) in a log-linear bin
(``ring.deliver._bucket``): exact below 128 ns, then 64 bins per power of two, so a bin ``[lo, hi)`` is at most
1/64 of ``lo`` wide.  A Prometheus bucket ``le`` counts the samples ``<= le``; it is exact only where ``le``
falls on a bin boundary.  1 us and 2 us are boundaries (1000 = 125 x 8); 50 us, 100 us and 1 ms are not (near
50 us the bins are 512 ns wide: 49,664 and 50,176 are boundaries).  So each nominal edge (``NOMINAL_EDGES_NS``)
is moved to the nearest bin boundary ``B`` (at most 0.8% away), and its ``le`` is ``B - 1`` ns, the largest
whole nanosecond of the bins below ``B``: the count is then the exact sum of those bins.  ``le="5.0175e-05"``
is the 50 us bucket, ``le="9.99e-07"`` the 1 us one (``latency_edges`` lists them).  The hot side keeps no sum
of samples, so the histogram has no ``_sum`` (the worst sample is exact: ``..._latency_max_seconds``).
"""
from __future__ import annotations

import bisect
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, \
    InfoMetricFamily, Metric
from prometheus_client.samples import Sample

from appliance import __version__
from appliance.cold import rows as R
from appliance.decode import counters as C
from appliance.decode.state import GAP_FIRST, GAP_LAST
from appliance.itch.layout import TYPES
from appliance.ring.deliver import CAP_FRAMES, CAP_LAT_MAX, CAP_NO_RX_TS, CAP_REC_BYTES, CAP_REC_DROPPED, \
    CAP_REC_FRAMES, CAP_WAKEUPS, HIST_SIZE, bucket_floor

NOMINAL_EDGES_NS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
                    1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000, 100_000_000)
# Decoder counters with a metric of their own; every other counting slot is appliance_decode_events_total{event}.
GAUGES = (C.OPEN_ORDERS, C.MAX_TIMESTAMP, C.FIRST_FRAME_NS, C.LAST_FRAME_NS, C.PENDING)
OWN = {C.FRAMES: ("frames", "link-layer frames the decoder read"),
       C.PACKETS: ("packets", "MoldUDP64 packets handed to the session layer"),
       C.MESSAGES: ("messages", "ITCH messages applied to the books"),
       C.DUPLICATE_PACKETS: ("duplicate_packets", "MoldUDP64 packets already received (on another line or again)"),
       C.HEARTBEATS: ("heartbeats", "MoldUDP64 heartbeat packets")}
# A publisher's counts (publish.publisher.OWN name, metric name without appliance_publisher_ and _total, help).
PUBLISHER_COUNTS = (
    ("sent", "records_sent", "records sent to NATS (each numbered once: its last sequence)"),
    ("acknowledged", "records_acknowledged", "records JetStream acknowledged as stored"),
    ("conflated", "records_conflated", "top-of-book updates replaced by a newer one before they were sent"),
    ("dropped", "records_dropped", "records dropped because the publisher's buffer was full"),
    ("resent", "records_resent", "records sent again (no acknowledgement in time, an error reply, a reconnection)"),
    ("ack_errors", "ack_errors", "error replies from JetStream (refused or no responders): answered by a resend"),
    ("reconnected", "reconnections", "times the publisher reconnected to a NATS server"))
STATES = {R.STATE_STARTING: "starting", R.STATE_RUNNING: "running", R.STATE_FINISHED: "finished"}


def seconds(ns: int) -> float:
    """Nanoseconds as seconds, the whole seconds kept exact (a Unix time in ns is beyond a double's 53 bits)."""
    return ns // 1_000_000_000 + ns % 1_000_000_000 / 1e9


def latency_edges() -> list[tuple[int, int]]:
    """(bins below the edge, le in ns) per nominal edge: the nearest bin boundary B, and le = B - 1."""
    floors = [bucket_floor(i) for i in range(HIST_SIZE)]
    out = []
    for ns in NOMINAL_EDGES_NS:
        k = bisect.bisect_right(floors, ns) - 1           # bin k holds ns: floors[k] <= ns < floors[k + 1]
        if floors[k + 1] - ns < ns - floors[k]:
            k += 1
        out.append((k, floors[k] - 1))
    return out


EDGES = latency_edges()


def histogram_buckets(hist: np.ndarray) -> list[tuple[str, int]]:
    """Cumulative (le, count) pairs, in seconds, ending with +Inf = every sample."""
    cum = np.concatenate(([0], np.cumsum(hist, dtype=np.int64)))
    return [(repr(float(f"{le}e-9")), int(cum[k])) for k, le in EDGES] + [("+Inf", int(cum[-1]))]


def build_info() -> Metric:
    import numba

    info = InfoMetricFamily("appliance_build", "the appliance's version and the Python and numba it runs on")
    info.add_metric([], {"version": __version__, "python": ".".join(map(str, sys.version_info[:3])),
                         "numba": numba.__version__})
    return info


def interface_drops(proc_root: str, pid: int, ifname: str) -> dict[str, int] | None:
    """The interface's receive counters as the capture's network namespace sees them (``/proc/PID/net/dev``):
    bytes, packets and drops (``drop`` is rx_dropped + rx_missed_errors, ``fifo`` rx_fifo_errors: together the
    ``kernel`` source of summary.json's drops).  None when the process or the interface is gone."""
    try:
        text = Path(proc_root, str(pid), "net", "dev").read_text()
    except OSError:
        return None
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == ifname:
            rx = [int(v) for v in rest.split()[:8]]
            return {"bytes": rx[0], "packets": rx[1], "drops": rx[3] + rx[4]}
    return None


class GapTally:
    """Messages lost, summed over the gap ring's rows (session, first, last) as they are published.  It reads
    the ring without claiming a consumer slot (it moves no cursor the capture's summary reports) and keeps the
    torn-row rule of ``cold.rows``: rows below ``published + PUBLISH_CHUNK - rows`` may be overwritten.  Rows it
    could not read in time are counted in ``missed`` (the total is then a lower bound)."""

    def __init__(self):
        self.cursor = self.lost_messages = self.missed = 0
        self.lock = threading.Lock()

    def update(self, region: R.Region) -> None:
        rows = region.rows[R.GAPS]
        if rows == 0:
            return
        with self.lock:
            seq = region.published(R.GAPS)
            if seq - self.cursor > rows - R.PUBLISH_CHUNK:
                skip = seq - self.cursor - (rows - R.PUBLISH_CHUNK)
                self.missed += skip
                self.cursor += skip
            idx = np.arange(self.cursor, seq) & (rows - 1)
            got = region.gaps[idx]                                   # a copy (fancy indexing)
            intact_from = region.published(R.GAPS) + R.PUBLISH_CHUNK - rows
            drop = min(max(0, intact_from - self.cursor), len(got))
            self.missed += drop
            good = got[drop:]
            self.lost_messages += int((good[:, GAP_LAST] - good[:, GAP_FIRST] + 1).sum())
            self.cursor = seq


class CaptureCollector:
    """Every metric a running capture's region, process and interface give.  ``pid`` is the capture's (the
    ready file's), ``interface`` its capture interface; ``proc_root`` is /proc unless a test says otherwise."""

    def __init__(self, region: R.Region, pid: int | None = None, interface: str | None = None,
                 proc_root: str = "/proc", drops=None):
        """``drops``: a callable giving more drop sources ({source: frames}) that only the capture's own process
        can read (its sockets and XDP maps: ``capture.stats.DropsBySource``; serve runs the capture in-process)."""
        self.region, self.pid, self.interface, self.proc_root = region, pid, interface, proc_root
        self.more_drops = drops
        self.gaps = GapTally()
        self._process = None
        self._iface_last = None

    def collect(self):
        region = self.region
        cnt, cap, by_type = region.cnt.copy(), region.cap.copy(), region.by_type.copy()
        yield from self._decoder(cnt, by_type)
        yield from self._capture(region, cap)
        yield from self._rings(region)
        yield from self._publishers(region)
        yield from self._process_metrics()
        yield build_info()

    def _decoder(self, cnt, by_type):
        for slot, (name, doc) in OWN.items():
            yield CounterMetricFamily(f"appliance_{name}", doc, value=int(cnt[slot]))
        types = CounterMetricFamily("appliance_messages_by_type", "ITCH messages applied, by message type",
                                    labels=["type"])
        for t in TYPES:
            types.add_metric([t], int(by_type[ord(t)]))
        yield types
        events = CounterMetricFamily("appliance_decode_events", "every other event the decoder counts "
                                     "(malformed input, table capacities reached; summary.json's names)",
                                     labels=["event"])
        for slot, name in C.NAMES.items():
            if slot not in OWN and slot not in GAUGES:
                events.add_metric([name], int(cnt[slot]))
        yield events
        self.gaps.update(self.region)
        yield CounterMetricFamily("appliance_gaps", "sequence gaps declared (no line delivered the messages)",
                                  value=self.region.published(R.GAPS))
        yield CounterMetricFamily("appliance_messages_lost", "messages inside declared gaps",
                                  value=self.gaps.lost_messages)
        yield CounterMetricFamily("appliance_gap_rows_missed", "gap rows overwritten before this exporter read "
                                  "them (appliance_messages_lost_total is then a lower bound)", value=self.gaps.missed)
        yield GaugeMetricFamily("appliance_open_orders", "live orders in the books", value=int(cnt[C.OPEN_ORDERS]))
        yield GaugeMetricFamily("appliance_pending_packets", "packets held waiting for another line to fill a hole",
                                value=int(cnt[C.PENDING]))
        yield GaugeMetricFamily("appliance_feed_last_frame_timestamp_seconds", "capture time (Unix) of the last "
                                "feed frame on any line; 0 before the first", value=seconds(int(cnt[C.LAST_FRAME_NS])))

    def _capture(self, region, cap):
        yield CounterMetricFamily("appliance_ring_frames", "frames taken off the receive ring(s)",
                                  value=int(cap[CAP_FRAMES]))
        yield CounterMetricFamily("appliance_ring_empty_polls", "receive loop turns that found the ring(s) empty",
                                  value=int(cap[CAP_WAKEUPS]))
        yield CounterMetricFamily("appliance_recorded_frames", "frames written to the recording",
                                  value=int(cap[CAP_REC_FRAMES]))
        yield CounterMetricFamily("appliance_recorded_bytes", "bytes written to the recording (pcap records)",
                                  value=int(cap[CAP_REC_BYTES]))
        drops = CounterMetricFamily("appliance_dropped_frames", "frames lost, by where they were counted "
                                    "(kernel: the interface's own counters since it came up, the last read "
                                    "while the capture ran; recording: decoded but not recorded)", labels=["source"])
        iface = interface_drops(self.proc_root, self.pid, self.interface) if self.pid and self.interface else None
        if iface is None:
            iface = self._iface_last                 # the capture has ended: its namespace's view is gone
        self._iface_last = iface
        if iface is not None:
            drops.add_metric(["kernel"], iface["drops"])
        drops.add_metric(["recording"], int(cap[CAP_REC_DROPPED]))
        for source, value in sorted((self.more_drops() if self.more_drops is not None else {}).items()):
            drops.add_metric([source], value)
        yield drops
        if iface is not None:
            yield self._one("appliance_interface_receive_bytes", "bytes the capture interface received",
                            self.interface, iface["bytes"])
            yield self._one("appliance_interface_receive_packets", "frames the capture interface received",
                            self.interface, iface["packets"])
        hist = region.hist.copy()
        lat = HistogramMetricFamily("appliance_receive_to_book_latency_seconds",
                                    "receive timestamp to book updated, per frame (buckets at bin boundaries: "
                                    "see appliance.service.metrics)")
        buckets = histogram_buckets(hist)
        lat.add_metric([], buckets, None)                      # no sum_value: no _sum, and so no _count either
        lat.samples.append(Sample(lat.name + "_count", {}, buckets[-1][1]))
        yield lat
        yield GaugeMetricFamily("appliance_receive_to_book_latency_max_seconds", "worst receive-to-book latency",
                                value=seconds(int(cap[CAP_LAT_MAX])))
        yield CounterMetricFamily("appliance_frames_without_rx_timestamp", "frames the kernel gave no receive "
                                  "timestamp (no latency sample)", value=int(cap[CAP_NO_RX_TS]))
        state = GaugeMetricFamily("appliance_capture_state", "the capture's state word (1 for the current one)",
                                  labels=["state"])
        for value, name in STATES.items():
            state.add_metric([name], 1 if region.state == value else 0)
        yield state

    @staticmethod
    def _one(name, doc, interface, value):
        family = CounterMetricFamily(name, doc, labels=["interface"])
        family.add_metric([interface], value)
        return family

    def _rings(self, region):
        labels = ["ring", "consumer"]
        published = CounterMetricFamily("appliance_ring_published_rows", "rows the hot side published",
                                        labels=["ring"])
        size = GaugeMetricFamily("appliance_ring_capacity_rows", "rows a ring holds", labels=["ring"])
        delivered = CounterMetricFamily("appliance_ring_delivered_rows", "rows a consumer was handed", labels=labels)
        lost = CounterMetricFamily("appliance_ring_lost_rows", "rows a consumer lost (fell more than a ring behind)",
                                   labels=labels)
        behind = GaugeMetricFamily("appliance_ring_behind_rows", "rows published and not yet taken by an "
                                   "attached consumer (the ring's fill as that consumer sees it)", labels=labels)
        attached = GaugeMetricFamily("appliance_ring_consumer_attached", "1 while the consumer in the slot is "
                                     "attached (slot0 is the table writer when the capture writes tables)",
                                     labels=["consumer"])
        consumers = region.consumers()
        for slot, info in consumers.items():
            attached.add_metric([f"slot{slot}"], 1 if info["attached"] else 0)
        for r in range(R.N_RINGS):
            if not region.rows[r]:
                continue
            ring, seq = R.RING_NAMES[r], region.published(r)
            published.add_metric([ring], seq)
            size.add_metric([ring], region.rows[r])
            for slot, info in consumers.items():
                line = region.consumer(r, slot)
                delivered.add_metric([ring, f"slot{slot}"], int(line[R.CS_DELIVERED]))
                lost.add_metric([ring, f"slot{slot}"], int(line[R.CS_LOST]))
                if info["attached"]:
                    behind.add_metric([ring, f"slot{slot}"], max(0, seq - int(line[R.CS_CURSOR])))
        yield from (published, size, delivered, lost, behind, attached)

    def _publishers(self, region):
        """Each NATS publisher's counts, from its slot's own words (``publish.publisher.OWN``; a slot is a
        publisher's when its ``MARK`` word says so), labelled like the ring metrics (``consumer="slotN"``), so its
        rows delivered and lost are ``appliance_ring_*_rows_total`` with the same label."""
        from appliance.publish.publisher import MARK, MARK_WORD, OWN, SERVER_PORT_WORD

        families = {name: CounterMetricFamily(f"appliance_publisher_{metric}", doc, labels=["consumer"])
                    for name, metric, doc in PUBLISHER_COUNTS}
        connected = GaugeMetricFamily("appliance_publisher_connected", "1 while the publisher is connected to a "
                                      "NATS server with its stream there", labels=["consumer"])
        port = GaugeMetricFamily("appliance_publisher_server_port", "port of the NATS server the publisher is "
                                 "connected to (0 while it is not)", labels=["consumer"])
        for slot in range(R.MAX_CONSUMERS):
            if int(region.consumer(MARK_WORD[0], slot)[MARK_WORD[1]]) != MARK:
                continue
            label = [f"slot{slot}"]
            for name, family in families.items():
                r, word = OWN[name]
                family.add_metric(label, int(region.consumer(r, slot)[word]))
            r, word = OWN["connected"]
            connected.add_metric(label, int(region.consumer(r, slot)[word]))
            port.add_metric(label, int(region.consumer(SERVER_PORT_WORD[0], slot)[SERVER_PORT_WORD[1]]))
        yield from (*families.values(), connected, port)

    def _process_metrics(self):
        if not self.pid:
            return
        try:
            if self._process is None or self._process.pid != self.pid:
                self._process = psutil.Process(self.pid)
            with self._process.oneshot():
                times = self._process.cpu_times()
                rss = self._process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            yield GaugeMetricFamily("appliance_capture_process_alive", "1 while the capture's process runs", value=0)
            return
        yield GaugeMetricFamily("appliance_capture_process_alive", "1 while the capture's process runs", value=1)
        cpu = CounterMetricFamily("appliance_capture_cpu_seconds", "CPU time of the capture's process "
                                  "(its own threads, not the output process)", labels=["mode"])
        cpu.add_metric(["user"], times.user)
        cpu.add_metric(["system"], times.system)
        yield cpu
        yield GaugeMetricFamily("appliance_capture_resident_memory_bytes", "resident memory of the capture's "
                                "process (includes the shared region and the decoder's tables)", value=rss)


class ServiceMetrics:
    """The service's own numbers, set by the service as things happen; thread-safe.  Exported at each scrape:

    * ``line_heard(feed, line)``: appliance_line_seconds_since_heard{feed,line};
    * ``add_bytes(kind, n)`` / ``add_error(kind, reason)`` with kind "recording" or "tables":
      appliance_{kind}_written_bytes_total, appliance_{kind}_errors_total{reason};
    * ``watch_disk(directory, role)``: appliance_disk_free_bytes / appliance_disk_size_bytes{directory,role}
      (os.statvfs at each scrape: space an unprivileged writer may use);
    * ``set_restarts(n)``: appliance_restarts_total (the service keeps the count across its own lifetimes);
    * ``session_completed()``: appliance_sessions_completed_total (captures that ended and were filed);
    * ``retention_deleted(nbytes)``: appliance_retention_deleted_files_total / ..._bytes_total;
    * ``set_phase(phase)``: appliance_serve_phase{phase} (1 for the current one of ``PHASES``).
    """

    KINDS = ("recording", "tables")
    PHASES = ("starting", "capturing", "between_sessions", "stopping")

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.heard: dict[tuple[str, str], float] = {}
        self.bytes = dict.fromkeys(self.KINDS, 0)
        self.errors: dict[tuple[str, str], int] = {}
        self.disks: dict[str, str] = {}
        self.restarts = 0
        self.sessions = self.deleted_files = self.deleted_bytes = 0
        self.phase: str | None = None

    def line_heard(self, feed: str, line: str, when: float | None = None) -> None:
        with self.lock:
            self.heard[(feed, line)] = self.clock() if when is None else when

    def add_bytes(self, kind: str, n: int) -> None:
        with self.lock:
            self.bytes[self._kind(kind)] += int(n)

    def add_error(self, kind: str, reason: str) -> None:
        key = (self._kind(kind), reason)
        with self.lock:
            self.errors[key] = self.errors.get(key, 0) + 1

    def watch_disk(self, directory: str, role: str) -> None:
        with self.lock:
            self.disks[str(directory)] = role

    def set_restarts(self, n: int) -> None:
        with self.lock:
            self.restarts = int(n)

    def session_completed(self) -> None:
        with self.lock:
            self.sessions += 1

    def retention_deleted(self, nbytes: int) -> None:
        with self.lock:
            self.deleted_files += 1
            self.deleted_bytes += int(nbytes)

    def set_phase(self, phase: str) -> None:
        if phase not in self.PHASES:
            raise ValueError(f"phase {phase!r} is not one of {', '.join(self.PHASES)}")
        with self.lock:
            self.phase = phase

    def _kind(self, kind: str) -> str:
        if kind not in self.KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(self.KINDS)}")
        return kind

    def collect(self):
        now = self.clock()
        with self.lock:
            heard, written, errors = dict(self.heard), dict(self.bytes), dict(self.errors)
            disks, restarts = dict(self.disks), self.restarts
            sessions, deleted, deleted_bytes, phase = self.sessions, self.deleted_files, self.deleted_bytes, \
                self.phase
        since = GaugeMetricFamily("appliance_line_seconds_since_heard", "seconds since a feed line's last packet",
                                  labels=["feed", "line"])
        for (feed, line), at in sorted(heard.items()):
            since.add_metric([feed, line], max(0.0, now - at))
        yield since
        for kind in self.KINDS:
            yield CounterMetricFamily(f"appliance_{kind}_written_bytes", f"bytes written to {kind} files",
                                      value=written[kind])
            family = CounterMetricFamily(f"appliance_{kind}_errors", f"failed writes of {kind} files",
                                         labels=["reason"])
            for (k, reason), n in sorted(errors.items()):
                if k == kind:
                    family.add_metric([reason], n)
            yield family
        free = GaugeMetricFamily("appliance_disk_free_bytes", "free space of a directory's file system (for an "
                                 "unprivileged writer)", labels=["directory", "role"])
        size = GaugeMetricFamily("appliance_disk_size_bytes", "size of a directory's file system",
                                 labels=["directory", "role"])
        for directory, role in sorted(disks.items()):
            got = disk_space(directory)
            if got is not None:
                free.add_metric([directory, role], got[0])
                size.add_metric([directory, role], got[1])
        yield free
        yield size
        yield CounterMetricFamily("appliance_restarts", "times the service was started again after it stopped "
                                  "without being asked to", value=restarts)
        yield CounterMetricFamily("appliance_sessions_completed", "captures of a session that ended and were "
                                  "filed (tables and summary.json) by this run of the service", value=sessions)
        yield CounterMetricFamily("appliance_retention_deleted_files", "recording files retention deleted",
                                  value=deleted)
        yield CounterMetricFamily("appliance_retention_deleted_bytes", "bytes of the recording files retention "
                                  "deleted", value=deleted_bytes)
        if phase is not None:
            family = GaugeMetricFamily("appliance_serve_phase", "what the service is doing (1 for the current "
                                       "phase)", labels=["phase"])
            for name in self.PHASES:
                family.add_metric([name], 1 if name == phase else 0)
            yield family


def disk_space(directory: str) -> tuple[int, int] | None:
    """(free, size) bytes of the file system holding ``directory``; None if it cannot be read."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
