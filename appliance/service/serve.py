"""``appliance serve``: the capture appliance as a long-running service, one capture per MoldUDP64 session.

The main thread runs captures one after another (``capture.engine.Capture``, in this process, with
``stop_at_end_of_session``): each starts with fresh books, writes its tables into a staging directory and, once
the session has ended (and its lines have been quiet for the linger), is filed under the session's name and
date with its summary.json (``service.sessions``); then the next capture is built.  Between two captures the
rings are torn down and set up again (the XDP program detached and attached): frames arriving in that window
are not captured (the log says how long it was; NASDAQ's next session starts hours after an end of session).

Beside it, for the life of the service:

* the **metrics server** (``service.http``): /metrics reads the current capture's shared region
  (``CaptureCollector``) and the service's own numbers (``ServiceMetrics``); /healthz and /readyz are judged
  here (``healthz`` / ``readyz`` below);
* the **ticker thread** (every ``TICK``): the signals (through ``signal.set_wakeup_fd``, so a SIGTERM is seen
  whichever handler -- ours or the capture's -- ran), a SIGHUP's reload, health samples, the per-line heard
  times, the recording and table byte counts, retention every ``RETENTION_EVERY`` and the systemd watchdog.

The watchdog is pinged only while the service is well: while capturing, when the capture's control loop has
ticked (its status hook) within ``STALL`` seconds and its receive loop turns (``CaptureHealth.healthz``);
while a capture is being set up or filed, for at most ``SETUP_LIMIT`` seconds (a cold numba cache compiles for
minutes; a set-up that hangs longer than that stops the pings and systemd restarts the service).
"""
from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from appliance.display import printable
from appliance.errors import RunFailed, UserError
from appliance.service import config as CF
from appliance.service import sessions
from appliance.service.retention import prune

TICK = 0.2                  # seconds between two passes of the ticker thread
RETENTION_EVERY = 2.0       # seconds between two retention passes
TABLES_EVERY = 1.0          # seconds between two looks at the table files' size
STALL = 2.0                 # the capture's control loop and receive loop must have turned within this
SETUP_LIMIT = 900.0         # seconds a capture's set-up may take before the watchdog stops being fed
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def capture_options(cfg: CF.Config):
    """The ``CaptureOptions`` of one session's capture under ``cfg``."""
    from appliance.capture.engine import CaptureOptions
    from appliance.replay.decoder import Options

    c, rec, out = cfg.capture, cfg.recording, table_output(cfg)
    feeds = [line.address for feed in cfg.feeds for line in feed.lines]
    decode = Options(feeds=feeds, messages=out.messages, packets=out.packets, order_capacity=c.order_capacity,
                     level_pool=c.level_pool)
    return CaptureOptions(
        iface=c.interface, feeds=feeds, engine=c.engine, decode=decode, stop_at_end_of_session=True,
        prefault=c.prefault, idle=c.idle, nap_us=c.nap_us, xdp_mode=c.xdp_mode, xdp_copy=c.xdp_copy,
        queues=None if c.queues == "all" else list(c.queues), frames=c.frames, hugepages=c.hugepages,
        tpacket_version=c.tpacket_version, block_size=c.block_size, blocks=c.blocks, retire_ms=c.retire_ms,
        record_dir=rec.directory if rec.enabled else None, rotate_bytes=rec.rotate_size,
        rotate_seconds=rec.rotate_seconds, snaplen=rec.snaplen, ring_rows=c.ring_rows, hot_cpu=c.hot_cpu,
        output_cpus=list(c.output_cpus) if c.output_cpus else None, hot_rt=c.hot_rt or None,
        handover_socket=cfg.service.handover_socket, publish=publish_specs(cfg))


def publish_specs(cfg: CF.Config) -> list[dict]:
    """A publisher process spec per ``kind = "nats"`` output (``publish.publisher.DEFAULTS`` names the keys)."""
    specs = []
    for o in cfg.outputs:
        if o.kind != "nats":
            continue
        feed = o.feed or (cfg.feeds[0].name if len(cfg.feeds) == 1 else None)
        if feed is None:
            raise UserError(f"{cfg.source}: outputs.{o.name}.feed is needed: the config has {len(cfg.feeds)} feeds, "
                            f"and the subjects name one (md.<feed>.<symbol>.<kind>)")
        specs.append({"feed": feed, "servers": list(o.servers), "encoding": o.encoding,
                      "buffer_records": o.buffer_records, "ack_window": o.ack_window, "max_age_s": o.max_age,
                      "max_bytes": o.max_bytes, "replicas": o.replicas, "nice": o.nice})
    return specs


def table_output(cfg: CF.Config):
    """The one csv output a capture writes (a capture has one output process: several would need several)."""
    csv = [o for o in cfg.outputs if o.kind == "csv"]
    if len(csv) != 1:
        raise UserError(f"{cfg.source}: serve writes one set of table files per session; the config has "
                        f"{len(csv)} csv outputs ({', '.join('outputs.' + o.name for o in csv)}): keep one")
    return csv[0]


def check_host(cfg: CF.Config) -> None:
    """What the file cannot say: the interface exists here, the privileges, the CPUs (one sentence each)."""
    from appliance.capture.send import check_iface
    from appliance.commands.capture import check_placement, check_privileges

    c = cfg.capture
    table_output(cfg)
    publish_specs(cfg)
    check_iface(c.interface)
    check_privileges(c.engine)
    check_placement(SimpleNamespace(hot_cpu=c.hot_cpu, output_cpus=list(c.output_cpus) if c.output_cpus else None,
                                    hot_rt=c.hot_rt or None, idle=c.idle))


def make_dirs(cfg: CF.Config) -> None:
    wanted = [(cfg.service.state_directory, "state"), (table_output(cfg).directory, "tables")]
    if cfg.recording.enabled:
        wanted.append((cfg.recording.directory, "recording"))
    for path, role in wanted:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFailed(f"cannot make the {role} directory {path}: {err.strerror or err}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise RunFailed(f"cannot write in the {role} directory {path} (owner and mode?)")


@dataclass
class Session:
    """The capture running now, and what the ticker keeps about it."""

    capture: object
    staging: Path
    health: object
    lines: dict                                   # (group, port) -> (feed, line name)
    heard: dict = field(default_factory=dict)     # (feed, line) -> monotonic time heard in this capture
    packets: dict = field(default_factory=dict)   # line index -> packets seen
    rec_bytes: int = 0
    rec_errors: int = 0
    table_bytes: int = 0
    up_at: float | None = None                    # rings up (time.monotonic)


class CurrentCapture:
    """The collector /metrics reads: the capture whose counts it shows, swapped by the service.  Counters are per
    session; the last session's final counts stay until the next session's first frame (hours later), so a
    scraper always gets them."""

    def __init__(self):
        self.collector = None

    def collect(self):
        from appliance.service.metrics import build_info

        collector = self.collector
        if collector is None:
            yield build_info()
            return
        yield from collector.collect()


class Serve:
    def __init__(self, cfg: CF.Config, path: str, log=None, take_over: bool = False):
        """``take_over``: the first capture takes the feed from the serve listening on ``service.handover_socket``
        (it drains and exits); the rest of the run is as usual."""
        from prometheus_client import CollectorRegistry

        from appliance.service.metrics import ServiceMetrics
        from appliance.service.notify import Notifier
        from appliance.service.state import ServeState

        self.config, self.path, self.pending = cfg, path, None
        self.take_over = take_over
        self.log = log or say
        self.stopping: dict = {"flag": None}
        self.terminate: str | None = None
        self.notifier = Notifier()
        self.metrics = ServiceMetrics()
        self.current_collector = CurrentCapture()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.current_collector)
        self.registry.register(self.metrics)
        self.state = ServeState(cfg.service.state_directory)
        self.session: Session | None = None
        self.phase, self.phase_at = "starting", time.monotonic()
        self.control_tick = 0.0
        self.rings_down_at: float | None = None
        self.run_returned_at = self.filed_at = 0.0
        self.windows: list[float] = []
        self.captures = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self._wake_r = self._wake_w = None

    # -- the life of the service -------------------------------------------------------------------------------
    def run(self) -> int:
        from appliance.service.http import MetricsServer

        cfg = self.config
        check_host(cfg)
        make_dirs(cfg)
        self._file_leftovers(table_output(cfg).directory)
        self._watch_disks(cfg)
        try:
            server = MetricsServer(cfg.metrics.listen, self.registry, self.healthz, self.readyz,
                                   reuse_port=bool(cfg.service.handover_socket))
        except UserError as err:
            raise UserError(str(err).replace("--listen", "[metrics] listen")) from None
        if self.state.start():
            self.log(f"the last run did not stop cleanly; restarts so far: {self.state.restarts}")
        self.metrics.set_restarts(self.state.restarts)
        old = self._catch_signals()
        ticker = threading.Thread(target=self._ticker, name="serve-ticker", daemon=True)
        try:
            with server:
                self.log(f"serving {cfg.source}: metrics, /healthz and /readyz on http://{server.address}")
                ticker.start()
                while self.terminate is None:
                    self._one_capture()
                self._set_phase("stopping")
                self.notifier.stopping(f"stopped by {self.terminate}")
                self.log(f"stopped by {self.terminate} after {self.metrics.sessions} sessions")
                self.state.stop()
        finally:
            self.done.set()
            if ticker.is_alive():
                ticker.join()
            self._restore_signals(old)
        return 0

    def _one_capture(self) -> None:
        from appliance.capture.engine import Capture
        from appliance.service.health import CaptureHealth

        if self.pending is not None:
            self.config, self.pending = self.pending, None
            self.log("applying the reloaded config to this capture")
            self._watch_disks(self.config)
        cfg = self.config
        self._set_phase("starting")
        staging = sessions.staging_dir(table_output(cfg).directory)
        options = capture_options(cfg)
        if self.take_over:
            options.take_over, self.take_over = cfg.service.handover_socket, False
        capture = Capture(options, str(staging), tables=True, status=self._control_tick_hook,
                          log=self.log, announce=self._announce)
        lines = {line.address: (feed.name, line.name) for feed in cfg.feeds for line in feed.lines}
        health = CaptureHealth(capture.region, os.getpid(), stale=cfg.metrics.feed_stale_seconds, stall=STALL)
        with self.lock:
            self.session = Session(capture, staging, health, lines)
            if self.current_collector.collector is None:
                self._show(capture)
        self.captures += 1
        try:
            capture.run(self.stopping)
        finally:
            self._set_phase("between_sessions")
            self.rings_down_at = capture.rings_closed_at or time.monotonic()
            self.run_returned_at = time.monotonic()
        self._file(capture, staging)
        self.filed_at = time.monotonic()
        capture_stop = capture.stop_reason
        with self.lock:
            self.session = None
        del capture, health
        gc.collect()                          # the decoder's tables (hundreds of MiB) go now, not at some later pass
        if self.stopping["flag"] in ("SIGTERM", "SIGINT"):
            self.terminate = self.terminate or self.stopping["flag"]
        elif capture_stop == "handover":
            self.terminate = self.terminate or "handover"     # our successor has the feed: this service is done
        else:
            self.stopping["flag"] = None      # end of session or a reload: the next capture starts
        self.stopping.pop("peer_ended", None)

    def _file(self, capture, staging: Path) -> None:
        """Write the finished capture's summary.json, file its directory, say what happened."""
        from appliance.replay.output import write_json

        sess = self.session
        self._count_recording(sess)
        summary = sessions.summary_of(capture)
        write_json(staging / "summary.json", summary)
        self._count_tables(sess)
        for kind, reason, sentence in sessions.problems(capture):
            if kind in ("tables", "recording"):
                self.metrics.add_error(kind, reason)
            self.log(sentence)
        if capture.stop_reason == "interface_gone":
            raise RunFailed(f"interface {capture.options.iface} went away; the service stops (what arrived before "
                            f"is in {table_output(self.config).directory})")
        path = sessions.settle(staging, summary)
        rss = _rss()
        if path is None:
            self.log(f"capture stopped by {capture.stop_reason} before any session arrived; nothing to file "
                     f"(rss {rss / 2**20:,.0f} MiB)")
            return
        names = [s["session"] for s in summary["sessions"]]
        if len(names) > 1:
            self.log(f"this capture saw {len(names)} sessions ({', '.join(names)}); filed under the first")
        self.metrics.session_completed()
        self.state.session_completed()
        ended = "ended" if summary["end_of_session"] else f"stopped by {capture.stop_reason}, no end of session"
        self.log(f"session {names[0]} {ended}: {summary['messages']:,} messages, {summary['packets']:,} packets, "
                 f"{len(summary['gaps'])} gaps; filed in {path} (rss {rss / 2**20:,.0f} MiB)")
        self.notifier.status(f"session {names[0]} filed in {path}; {self.metrics.sessions} sessions so far")

    def _file_leftovers(self, directory: str) -> None:
        """Staging directories of runs that were killed mid-session: filed as incomplete, never as a session."""
        from appliance.replay.output import OutputFailed

        for left in sessions.leftovers(directory):
            why = ("the run that wrote it ended without filing its session (killed or crashed): no summary.json; "
                   "the tables hold the rows its capture had published; its recording holds every frame received")
            try:
                moved = sessions.mark_incomplete(left, why)
            except (OSError, OutputFailed) as err:
                self.log(f"{left} holds the tables of a run that did not finish; it could not be marked "
                         f"incomplete ({err}): left as it is")
                continue
            self.log(f"{left} holds the tables of a run that did not finish (no summary.json): filed as "
                     f"{moved.name}, with {sessions.INCOMPLETE_NOTE}")

    # -- hooks the capture calls ----------------------------------------------------------------------------------
    def _announce(self, text: str) -> None:
        """The capture's readiness line: its rings are up."""
        now = time.monotonic()
        self.log(text)
        with self.lock:
            if self.session is not None:
                self.session.up_at = now
                self.session.health.sample()
        if self.rings_down_at is not None:
            window = now - self.rings_down_at
            self.windows.append(window)
            self.log(f"rings were down for {window:.2f} s between two captures (frames then are not captured): "
                     f"{self.run_returned_at - self.rings_down_at:.2f} s finishing the capture (the cold side "
                     f"drains), {self.filed_at - self.run_returned_at:.2f} s filing the session, "
                     f"{now - self.filed_at:.2f} s setting up the next (rss {_rss() / 2**20:.0f} MiB)")
        self.control_tick = now
        self._set_phase("capturing")
        if self.captures == 1:
            self.notifier.ready(f"capture up on {self.config.capture.interface}, waiting for a session")
        else:
            self.notifier.status(f"capture {self.captures} up on {self.config.capture.interface}, waiting for "
                                 f"the next session")

    def _control_tick_hook(self, _capture) -> None:
        self.control_tick = time.monotonic()

    # -- health ----------------------------------------------------------------------------------------------------
    def healthz(self) -> tuple[bool, dict]:
        sess, phase = self.session, self.phase
        if phase == "capturing" and sess is not None:
            ok, reasons = sess.health.healthz()
            quiet = time.monotonic() - self.control_tick
            if quiet > STALL:
                ok, reasons["control"] = False, f"the control loop has not ticked for {quiet:.1f} s"
            reasons["serve"] = "capturing"
            return ok, reasons
        busy = time.monotonic() - self.phase_at
        if phase in ("starting", "between_sessions") and busy > SETUP_LIMIT:
            return False, {"serve": f"{phase.replace('_', ' ')} for {busy:.0f} s (more than {SETUP_LIMIT:g} s)"}
        return True, {"serve": f"{phase.replace('_', ' ')}, for {busy:.1f} s"}

    def readyz(self) -> tuple[bool, dict]:
        sess, phase = self.session, self.phase
        if phase != "capturing" or sess is None:
            return False, {"serve": f"between sessions ({phase.replace('_', ' ')}): no capture is taking frames"}
        ok, reasons = self.healthz()
        ready_ok, ready = sess.health.readyz()            # healthz again, the feed as a whole, the row rings
        ready.update(reasons)
        ok = ok and ready_ok
        stale, now, lines = self.config.metrics.feed_stale_seconds, time.monotonic(), {}
        for feed, line in sess.lines.values():
            at = sess.heard.get((feed, line))
            if at is None:
                ok, lines[f"{feed}/{line}"] = False, "not heard in this capture yet"
            elif now - at > stale:
                ok, lines[f"{feed}/{line}"] = False, f"not heard for {now - at:.1f} s (more than {stale:g} s)"
            else:
                lines[f"{feed}/{line}"] = f"heard {now - at:.1f} s ago"
        ready["lines"] = lines
        floor, disks = self.config.recording.free_floor, {}
        for directory, role in self._disk_roles(self.config):
            from appliance.service.metrics import disk_space

            got = disk_space(directory)
            if got is None or got[0] < floor:
                ok = False
                disks[role] = f"{directory}: " + ("unreadable" if got is None else
                                                  f"{got[0]:,} bytes free, under the floor of {floor:,}")
            else:
                disks[role] = f"{got[0]:,} bytes free"
        ready["disk"] = disks
        return ok, ready

    # -- the ticker thread -----------------------------------------------------------------------------------------
    def _ticker(self) -> None:
        last_retention = last_tables = last_ping = 0.0
        period = self.notifier.watchdog_period if self.config.service.watchdog else None
        while not self.done.wait(TICK):
            try:
                self._signals()
                now = time.monotonic()
                with self.lock:
                    sess = self.session
                if sess is not None and self.phase == "capturing":
                    self._observe(sess, now, now - last_tables >= TABLES_EVERY)
                    if now - last_tables >= TABLES_EVERY:
                        last_tables = now
                if now - last_retention >= RETENTION_EVERY:
                    last_retention = now
                    self._retention()
                if period and now - last_ping >= period and self.healthz()[0]:
                    self.notifier.watchdog()
                    last_ping = now
            except Exception as err:                      # noqa: BLE001 (the ticker must go on; say it once a time)
                self.log(f"ticker: {type(err).__name__}: {err}")

    def _observe(self, sess: Session, now: float, tables: bool) -> None:
        from appliance.ring.deliver import CAP_FRAMES

        capture = sess.capture
        sess.health.sample()
        mold = capture.decoder.mold
        for i in range(int(mold.ln_meta[0])):
            n = int(mold.ln_packets[i])
            if n != sess.packets.get(i, 0):
                sess.packets[i] = n
                name = sess.lines.get((int(mold.ln_group[i]), int(mold.ln_port[i])))
                if name is not None:
                    sess.heard[name] = now
                    self.metrics.line_heard(*name, when=now)
        if self.current_collector.collector is not None and \
                self.current_collector.collector.region is not capture.region and capture.cap[CAP_FRAMES]:
            with self.lock:
                self._show(capture)                       # the new session's first frame: its counts from now on
        self._count_recording(sess)
        if tables:
            self._count_tables(sess)

    def _show(self, capture) -> None:
        from appliance.capture.stats import DropsBySource
        from appliance.service.metrics import CaptureCollector

        self.current_collector.collector = CaptureCollector(capture.region, pid=os.getpid(),
                                                            interface=capture.options.iface,
                                                            drops=DropsBySource(capture))

    def _count_recording(self, sess: Session | None) -> None:
        from appliance.cold.recording import RS_BYTES_WRITTEN, RS_WRITE_ERRORS

        if sess is None or sess.capture.region is None or not sess.capture.region.frame_bytes:
            return
        ctl = sess.capture.region.fctl
        written, errors = int(ctl[RS_BYTES_WRITTEN]), int(ctl[RS_WRITE_ERRORS])
        if written > sess.rec_bytes:
            self.metrics.add_bytes("recording", written - sess.rec_bytes)
            sess.rec_bytes = written
        for _ in range(max(0, errors - sess.rec_errors)):
            self.metrics.add_error("recording", "write")
        sess.rec_errors = max(errors, sess.rec_errors)

    def _count_tables(self, sess: Session | None) -> None:
        if sess is None:
            return
        size = sessions.directory_bytes(sess.staging)
        if size > sess.table_bytes:
            self.metrics.add_bytes("tables", size - sess.table_bytes)
            sess.table_bytes = size

    def _retention(self) -> None:
        rec = (self.pending or self.config).recording
        if not rec.enabled:
            return
        for gone in prune(rec.directory, rec.retain_bytes, rec.retain_days, rec.free_floor):
            if gone.error:
                self.log(f"retention could not delete {rec.directory}/{gone.name} ({gone.why}): {gone.error}")
                continue
            self.metrics.retention_deleted(gone.size)
            self.log(f"retention deleted {rec.directory}/{gone.name} ({gone.size:,} bytes, {gone.why})")

    # -- signals and reload ---------------------------------------------------------------------------------------
    def _catch_signals(self) -> dict:
        """Our handlers (the capture installs its own for SIGINT/SIGTERM while it runs); every one of them also
        writes to the wakeup socket, which the ticker reads."""
        def on_stop(signum, _frame):
            self.stopping["flag"] = self.stopping["flag"] or signal.Signals(signum).name

        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        old = {s: signal.signal(s, on_stop) for s in STOP_SIGNALS}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: None)
        old["wakeup"] = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        return old

    def _restore_signals(self, old: dict) -> None:
        signal.set_wakeup_fd(old.pop("wakeup"))
        for s, handler in old.items():
            signal.signal(s, handler)
        self._wake_r.close()
        self._wake_w.close()

    def _signals(self) -> None:
        try:
            got = self._wake_r.recv(64)
        except BlockingIOError:
            return
        for signum in got:
            if signum in STOP_SIGNALS:
                name = signal.Signals(signum).name
                if self.terminate is None:
                    self.log(f"{name}: stopping the capture cleanly")
                self.terminate = self.terminate or name
                self.stopping["flag"] = self.stopping["flag"] or name
            elif signum == signal.SIGHUP:
                self._reload()

    def _reload(self) -> None:
        """SIGHUP: read the file again.  A bad file changes nothing.  The new config applies to the next capture;
        if the capture running now has received no feed frame yet (it waits for the next session), it is
        restarted at once with the new config -- nothing is lost -- otherwise at the end of its session."""
        from appliance.ring.deliver import CAP_FRAMES

        self.notifier.reloading()
        self.log(f"SIGHUP: reloading {self.path}")
        try:
            new = CF.load(self.path)
            check_host(new)
            make_dirs(new)
        except UserError as err:
            self.log(f"the reloaded config is refused, the running one stays: {err}")
            self.notifier.ready()
            return
        old = self.config
        for key, a, b in (("metrics.listen", old.metrics.listen, new.metrics.listen),
                          ("service.state_directory", old.service.state_directory, new.service.state_directory)):
            if a != b:
                self.log(f"{key} changed to {b}: that takes a restart of the service (it stays {a} until then)")
        self.pending = new
        self.log("retention limits from the reloaded config apply now")
        with self.lock:
            sess = self.session
        if sess is not None and self.phase == "capturing" and not int(sess.capture.cap[CAP_FRAMES]):
            self.log("the capture has received no feed frame yet: it restarts now with the reloaded config")
            self.stopping["flag"] = self.stopping["flag"] or "reload"
        else:
            self.log("feeds, capture settings, recording and outputs of the reloaded config apply from the next "
                     "capture (when the current session ends)")
        self.notifier.ready()

    # -- small things ---------------------------------------------------------------------------------------------
    def _set_phase(self, phase: str) -> None:
        self.phase, self.phase_at = phase, time.monotonic()
        self.metrics.set_phase(phase)

    @staticmethod
    def _disk_roles(cfg: CF.Config) -> list[tuple[str, str]]:
        roles = [(table_output(cfg).directory, "tables")]
        if cfg.recording.enabled:
            roles.append((cfg.recording.directory, "recording"))
        return roles

    def _watch_disks(self, cfg: CF.Config) -> None:
        for directory, role in self._disk_roles(cfg):
            self.metrics.watch_disk(directory, role)


_say_lock = threading.Lock()


def say(text: str) -> None:
    """One line on stderr per event (journald keeps stderr)."""
    with _say_lock:
        print(f"appliance: {printable(text)}", file=sys.stderr, flush=True)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss
