"""The live capture driver: rings in, the replay decoder's state, rows out to the cold side.

Two threads and a process.  The **hot thread** runs the ring kernel (``appliance.ring``) and nothing else: the
kernel takes frames where the kernel put them, runs them through ``walk.frame`` (the very function replay uses,
so a live capture and a replay of its recording build the same books), publishes every finished row into
the shared row rings (``cold.rows``) and, when recording, appends the frame to the shared frame ring -- it never
formats, writes or waits for a consumer.  It returns to Python only when asked to stop (``wait[W_STOP]``, a
shared word), in the rare case a buffer the driver keeps (gaps, broken trades for the summary) fills, and once
every ``HOT_DEADLINE_NS`` at most.  The **control thread** (the main one: signals go there) looks at shared
counters every ``TICK`` -- status line, multicast watch, end of session, duration, the interface, the cold
side's processes -- and sets the stop word.  The **output process** (``cold.output``) reads the row rings and
writes the table files at its own pace; if it falls more than a ring behind, it loses rows (counted, reported,
exit 1) and the receive path does not notice.  The **recording process** (``cold.recording``, with
``--record``) writes the frame ring to pcap files; when it has not made room, frames are counted as not
recorded (reported, exit 1) and the receive path does not notice either.

When the ring is empty the kernel waits inside as ``--idle`` says (``poll``: blocks in poll() on every ring's
descriptor, in slices of at most 20 ms so a stop is seen; ``nap``: sleeps ``--nap-us`` first so frames arrive
in batches; ``spin``: re-reads the rings, a whole core).
Stops on SIGINT/SIGTERM, after ``duration``, when the interface goes away, or once every session has sent its
end-of-session packet and the lines have been quiet for ``linger`` seconds (so the other line's copies are
counted too), or on SIGUSR1 (another fan-out worker saw the end of session) once the lines are that quiet.
While no feed frame has arrived, ``watch.MulticastWatch`` notes which multicast lines do (a wrong ``--feed``).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import numpy as np

from appliance.capture import stats as capstats
from appliance.capture.ready import END_WAIT, FanoutLine, remove_ready, write_ready
from appliance.capture.signals import catch_stop_signals, restore
from appliance.capture.warm import prefault, warm
from appliance.capture.watch import MulticastWatch
from appliance.decode import counters as C
from appliance.cold import rows as R
from appliance.cold.output import OutputProcess
from appliance.cold.recording import RecordingProcess
from appliance.decode.state import SS_COUNT, SS_RESOLVE
from appliance.errors import UserError
from appliance.replay.decoder import Decoder, Options
from appliance.ring.atomics import IDLE_NAP, IDLE_POLL, IDLE_SPIN, W_DEADLINE, W_MODE, W_NAP_US, W_NFDS, \
    W_ERROR, W_SIZE, W_STOP, poll_set
from appliance.ring.deliver import CAP_FRAMES, CAP_SIZE, HIST_SIZE, OUT_FULL, new_rx_state, recording_on

BUDGET_FRAMES = 1 << 24      # frames per ring kernel call at most (the deadline or a stop comes first)
HOT_DEADLINE_NS = 1_000_000_000  # the hot thread's kernel returns at least this often (nothing needs it sooner)
TICK = 0.1                    # seconds between the control thread's passes (status, stop checks)
IDLE_MODES = {"poll": IDLE_POLL, "nap": IDLE_NAP, "spin": IDLE_SPIN}
HOT_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGCHLD}


@dataclass
class CaptureOptions:
    iface: str
    feeds: list[tuple[int, int]]
    engine: str = "xdp"                      # "xdp" or "tpacket"
    decode: Options = field(default_factory=Options)
    duration: float | None = None            # seconds; None: until a signal or the end of session
    linger: float = 0.5
    stop_at_end_of_session: bool = True
    prefault: bool = True                    # make the decoder's tables resident before the first frame
    idle: str = "poll"                       # what a ring kernel does when its ring is empty: poll | nap | spin
    nap_us: int = 200
    # AF_XDP
    xdp_mode: str = "auto"                   # attach: auto | native | generic
    xdp_copy: str = "auto"                   # bind: auto | copy | zerocopy
    queues: list[int] | None = None          # None: every rx queue of the interface
    frames: int | None = None                # UMEM chunks per queue; None: umem_frames(queue count)
    hugepages: bool = True
    # TPACKET_V3 / V2
    tpacket_version: int = 3                 # 3: blocks (throughput); 2: a slot per frame (latency)
    block_size: int = 1 << 20
    blocks: int = 64
    retire_ms: int = 2
    fanout: tuple[int, str] | None = None
    fanout_start: str | None = None          # a --workers member: the start line's directory (capture/ready.py)
    handover_socket: str | None = None       # listen here for a successor (capture/handover.py)
    take_over: str | None = None             # take the feed from the capture listening here
    ready_file: str | None = None            # written once the rings are up, removed at the end
    # recording
    record_dir: str | None = None
    rotate_bytes: int | None = None
    rotate_seconds: int | None = None
    max_files: int | None = None
    snaplen: int = 65535
    record_ring: int = R.DEFAULT_FRAME_BYTES  # bytes of the shared frame ring the recording process drains
    # the cold side
    ring_rows: int = 1 << 20                 # rows per shared row ring (top of book, tape, messages)
    slow_output_ms: float = 0.0              # test hook: the output process sleeps this long after each batch
    hot_cpu: int | None = None               # pin the hot thread here (the control thread and output elsewhere)
    output_cpus: list[int] | None = None     # CPUs for the output process and the control thread
    hot_rt: int | None = None                # SCHED_FIFO priority for the hot thread (see ``_prioritise``)
    publish: list[dict] = field(default_factory=list)   # a NATS publisher process per spec (publish.publisher)


UMEM_BUDGET = 256 << 20      # default AF_XDP memory over all queues


def umem_frames(queues: int) -> int:
    """Default UMEM frames per queue: 16384 (64 MiB, ~50 ms of one queue at 330k pps) for up to four queues,
    fewer per queue beyond so all of them stay within 256 MiB (at least 2048 each).  Bind only the queues the
    feed arrives on (--queues) to give each more."""
    per_queue = UMEM_BUDGET // 4096 // max(1, queues)
    return max(2048, min(16384, 1 << (per_queue.bit_length() - 1)))


class Capture:
    def __init__(self, options: CaptureOptions, out_dir: str | None = None, tables: bool = True, status=None,
                 log=None, announce=None):
        """``out_dir``: where the tables go (with ``tables``, written by the output process); None: no shared
        rings and no output (a test driving the ring kernels itself; rows stay in the decoder's buffers)."""
        self.options = options
        d = options.decode
        self.region = self.output = self.recording = None
        self.publishers: list = []
        if out_dir is None:
            self.decoder = Decoder(d, None)
            self.rx = new_rx_state(self.decoder.state)
        else:
            self.region = R.Region.create(ring_sizes(options), {"cnt": C.SIZE, "by_type": 256, "cap": CAP_SIZE,
                                                                "hist": HIST_SIZE},
                                          options.record_ring if options.record_dir else 0)
            self.decoder = Decoder(replace(d, vwap=False), None)      # the consumers fold VWAP from the tape
            names = self.region
            self.decoder.adopt(sym=names.sym, sym_set=names.sym_set, ln_group=names.ln_group,
                               ln_port=names.ln_port, ln_meta=names.ln_meta, ss_meta=names.ss_meta,
                               ss_name=names.ss_name, cnt=names.cnt, by_type=names.by_type)
            view = self.region.hot_view()
            self.decoder.sink = R.Publisher(view, self.decoder.out)
            self.rx = new_rx_state(self.decoder.state, view, self.region.cap, self.region.hist)   # the kernel's
            if tables:
                self.output = OutputProcess(self.region, out_dir, d.messages, d.packets, d.window_ns, d.step_ns,
                                            options.slow_output_ms)
            if options.record_dir:
                self.rx = recording_on(self.rx, self.region.frames, self.region.fctl, options.snaplen)
                self.recording = RecordingProcess(self.region, options.record_dir, options.rotate_bytes,
                                                  options.rotate_seconds, options.max_files, options.snaplen)
            if options.publish:
                from appliance.publish.publisher import PublisherProcess

                # Slots are given, not taken: a publisher starting before the output process has claimed slot 0
                # would take it, and the two would then share one cursor (each writing part of the rows).
                self.publishers = [PublisherProcess(self.region, dict(spec, window_ns=d.window_ns,
                                                                      step_ns=d.step_ns, slot=R.FILES_SLOT + 1 + i))
                                   for i, spec in enumerate(options.publish)]
        self.cap, self.hist = self.rx.cap, self.rx.hist
        self.status = status                  # callable(summary dict) for the live status line, or None
        self.log = log or (lambda text: None)
        self.announce = announce or self.log     # the readiness line (-q does not hide it)
        self.watch = self.fanout_line = None
        self.predecessor = self.successor = None    # capture/handover.py: our successor's link, our predecessor's
        self.stop_reason: str | None = None
        self.output_code: int | None = None
        self.hot_error: BaseException | None = None
        self.trouble: str | None = None
        self.ring_info: dict = {}
        self.rings_closed_at: float | None = None    # time.monotonic() once the rings (and XDP) are torn down
        self.stats: dict = {}
        self.seconds = 0.0

    # -- setup ----------------------------------------------------------------------------------------------
    def _open_rings(self, stack: ExitStack) -> list:
        o = self.options
        if o.engine == "tpacket":
            from appliance.ring.tpacket import TpacketRing

            fanout = self._handover_group(stack)
            ring = stack.enter_context(TpacketRing(o.iface, o.feeds, o.block_size, o.blocks, o.retire_ms,
                                                   fanout, hold=o.fanout_start is not None or o.take_over is not None,
                                                   version=o.tpacket_version))
            self.ring_info = {"engine": "tpacket", "tpacket_version": o.tpacket_version,
                              "block_size": o.block_size, "blocks": o.blocks,
                              "fanout": list(ring.fanout) if ring.fanout else None}
            self.ring_info.update({"retire_ms": o.retire_ms} if o.tpacket_version == 3 else
                                  {"frame_size": ring.frame_size})
            return [ring]
        from appliance.ring import steer
        from appliance.ring.tpacket import join_groups
        from appliance.ring.xsk import XskReceiver, XskSocket, rx_queue_count

        self._handover_group(stack)
        if self.successor is not None:           # the predecessor's sockets, UMEMs and program (handover.py)
            socks, prog, frames = self._adopt_xdp(stack)
            queues = [s.queue for s in socks]
        else:
            # The program first, then the queues are counted: a driver may add rx queues when XDP attaches
            # (virtio_net adds a queue pair per CPU for XDP_TX when it has them to spare, and the device then
            # spreads frames over all of them: counted before, frames on the new queues went to the stack).
            prog = steer.SteerProgram(o.iface, o.feeds, o.xdp_mode).__enter__()
            try:
                queues = o.queues if o.queues is not None else list(range(rx_queue_count(o.iface)))
                frames = o.frames or umem_frames(len(queues))
                socks = [stack.enter_context(XskSocket(o.iface, q, frames=frames, ring=frames, copy_mode=o.xdp_copy,
                                                       hugepages=o.hugepages, magic=steer.STEER_META_MAGIC))
                         for q in queues]
            except BaseException:
                prog.close()
                raise
            stack.callback(prog.close)           # detached before the sockets close
            for q, s in zip(queues, socks):
                prog.set_socket(q, s.fileno())
        self.program = prog
        huge = all(s.on_hugepages for s in socks)
        if not huge:
            self.log("AF_XDP UMEM on normal 4 KiB pages (no free 2 MB hugepages; "
                     "see 'appliance tune' to reserve them)")
        self.ring_info = {"engine": "xdp", "queues": queues, "attach_mode": prog.mode_attached,
                          "zerocopy": all(s.zerocopy for s in socks), "umem_hugepages": huge,
                          "frames_per_queue": frames, "replaced_stale_program": bool(prog.replaced_stale)}
        self._igmp = stack.enter_context(join_groups(o.iface, [g for g, _ in o.feeds]))
        return [stack.enter_context(XskReceiver(socks))]

    def _handover_group(self, stack: ExitStack) -> tuple[int, str] | None:
        """The handover links; for TPACKET the fan-out group: a successor joins its predecessor's (asked over
        ``--take-over``), a capture that may hand over starts a PACKET_FANOUT_CBPF group of its own (id 0: the
        kernel picks one); else ``fanout``."""
        from appliance.capture.handover import Predecessor, Successor

        o = self.options
        if o.handover_socket:
            self.predecessor = Predecessor(o.handover_socket, self.log)
            stack.callback(self.predecessor.stop_listening)    # the successor link stays for ``left``
        if o.take_over:
            self.successor = Successor(o.take_over, self.log)
            if o.engine == "tpacket":
                return self.successor.connect(o.feeds), "cbpf"
        return (0, "cbpf") if o.handover_socket else o.fanout

    def _adopt_xdp(self, stack: ExitStack) -> tuple[list, object, int]:
        """AF_XDP --take-over: the running capture's sockets (with their UMEMs) and steering program, by fd."""
        from appliance.ring import steer
        from appliance.ring.xsk import XskSocket

        o = self.options
        offer, fds = self.successor.connect_xdp(o.iface, o.feeds, o.queues)
        pending = list(fds)
        stack.callback(lambda: [os.close(fd) for fd in pending])    # until each fd has an owner that closes it
        prog = steer.SteerProgram.adopt(o.iface, o.feeds, offer["attach_mode"], fds[:5])
        del pending[:5]
        stack.callback(prog.close)
        socks = []
        for i, q in enumerate(offer["queues"]):
            sock_fd, umem_fd = fds[5 + 2 * i], fds[6 + 2 * i]
            sock = XskSocket.adopt(o.iface, q, sock_fd, umem_fd, offer["frames"], offer["chunk"], offer["ring"],
                                   offer["magic"], offer["zerocopy"][i], offer["hugepages"][i])
            pending.remove(sock_fd)
            pending.remove(umem_fd)
            socks.append(stack.enter_context(sock))
        return socks, prog, offer["frames"]

    def _tick_handover(self, stopping: dict) -> None:
        """A successor's messages (and, once drained after the switch, the stop); our predecessor's departure,
        after which we listen for our own successor."""
        if self.successor is not None and self.successor.tick() and self.predecessor is not None:
            self.predecessor.listen(self.rings[0], self.options.feeds, self._xdp_program())
        if self.predecessor is not None:
            reason = self.predecessor.tick(self.cap)
            if reason:
                stopping["flag"] = stopping["flag"] or reason

    def _xdp_program(self):
        return self.program if self.options.engine == "xdp" else None

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self, stopping: dict | None = None) -> None:
        """Capture until a stop; ``stopping`` is a flag a caller's signal handler already sets (so a signal during
        start-up, before this runs, still ends in a written summary), else SIGINT/SIGTERM are caught here."""
        o = self.options
        stopping = stopping if stopping is not None else {"flag": None}
        old = catch_stop_signals(stopping)
        try:
            for proc in self._cold():
                proc.start()                  # they import and load their kernels while ours warm up
            warm(o.engine, o.iface, o.queues, o.tpacket_version)   # compile or load the ring kernel before any frame
            if o.prefault and stopping["flag"] is None:
                prefault(self.decoder)
            for proc in self._cold():
                proc.wait_ready()
            self._place()
            started = time.perf_counter()
            self._capture(stopping)
        except BaseException:
            for proc in self._cold():
                proc.kill()
            raise
        finally:
            restore(old)
            remove_ready(o.ready_file)
        self.seconds = time.perf_counter() - started
        self.decoder.finish_stream()          # the last rows go into the rings
        for proc in self._cold():
            proc.check()                      # one that died during the capture (before FINISHED lets them end)
        if self.region is not None:
            self.region.set_state(R.STATE_FINISHED)
        if self.output is not None:
            self.output_code = self.output.finish()
            self.decoder.cnt[C.VWAP_LATE_TRADES] += self.output.vwap_late_trades()
        self.stats["output"] = capstats.output_stats(self)
        if self.recording is not None:
            self.recording.finish()
            capstats.add_recording(self.stats, self.recording.result())
        if self.publishers:
            self.stats["publishers"] = [{"pid": pub.pid, "exit_status": pub.finish(), "ended_early": pub.ended,
                                         **(pub.report() or {})} for pub in self.publishers]

    def _cold(self) -> list:
        """The cold side's processes: the output process (tables), the recording process, the publishers."""
        return [p for p in (self.output, self.recording, *self.publishers) if p is not None]

    def _capture(self, stopping: dict) -> None:
        o = self.options
        with ExitStack() as stack:
            rings = self._open_rings(stack)
            self.watch = stack.enter_context(MulticastWatch(o.iface))
            self._start_line(rings, stopping)
            iface_before = capstats.iface_counters(o.iface)
            ran = stopping["flag"] is None
            self._loop(rings, stopping, time.perf_counter())
            self._end_line(rings)
            self.watch.close()
            self.stats = capstats.collect(self, rings, iface_before)
            self.stats["multicast_seen"] = self.watch.result() if ran else None
        self.rings_closed_at = time.monotonic()
        handover = {}
        if self.successor is not None:
            handover["took_over"] = self.successor.finish(self.decoder.mold)
        if self.predecessor is not None:
            self.predecessor.left(self.decoder.mold, int(self.cap[CAP_FRAMES]))   # out of the group: say so
            if self.predecessor.info.get("switched_at_unix") is not None:
                handover["handed_over"] = self.predecessor.info
        if handover:
            self.stats["handover"] = handover

    def _start_line(self, rings, stopping: dict) -> None:
        """Rings are up: a fan-out member waits until every member has joined, then takes the feed; then the
        ready file and the readiness line (a --workers member's parent says it for all), in that order, so
        whoever reads the line finds the file."""
        o = self.options
        if o.fanout_start is not None:
            self.fanout_line = FanoutLine(o.fanout_start)
            self.fanout_line.joined()
            self.fanout_line.wait_for_go(stopping)
            rings[0].release()
        if self.successor is not None and o.engine == "xdp":    # ready: the old one stops, we go on from there
            handed = self.successor.take(rings[0])
            self.program.counter_base = handed["xdp_counters"]
            self.log(f"took the AF_XDP sockets over from pid {self.successor.info['predecessor_pid']} "
                     f"(it stopped {self.successor.info['switch_us']:g} us after being asked)")
        elif self.successor is not None:            # ready: the feed filter on, then every frame to us
            rings[0].release()
            self.successor.switch(rings[0])
            self.log(f"took the feed over from pid {self.successor.info['predecessor_pid']} "
                     f"(switch {self.successor.info['switch_us']:g} us)")
        elif self.predecessor is not None:
            self.predecessor.listen(rings[0], o.feeds, self._xdp_program())
        if o.ready_file:
            rows = {"rows_fd": self.region.fd} if self.region is not None else {}
            write_ready(o.ready_file, {"pid": os.getpid(), "interface": o.iface, "engine": o.engine, **rows,
                                       **{k: v for k, v in self.ring_info.items() if k in ("queues", "fanout")}})
        if o.fanout_start is None:
            self.announce(f"capturing on {o.iface} ({capstats.describe(self.ring_info)}); stop with Ctrl-C")

    def _end_line(self, rings) -> None:
        """A --workers member leaves its fan-out group only once no member takes frames any more (ready.py)."""
        line = self.fanout_line
        if line is not None:
            if self.stop_reason == "end_of_session":
                line.ended()
            rings[0].hold()
            if not line.held():
                self.log(f"left the fan-out group after {END_WAIT:g} s with other workers still taking frames")

    def _tick_watch(self, frames: int, stopping: dict) -> None:
        """While no feed frame has come (here, or to another fan-out member), sample what multicast does; note
        another member's end of session."""
        line = self.fanout_line
        if line is not None:
            if frames:
                line.fed()
            if line.peer_ended():
                stopping["peer_ended"] = True
        if self.watch.watching:
            if frames or (line is not None and line.peer_fed()):
                self.watch.close("first_feed_frame")
            else:
                self.watch.drain()

    def _loop(self, rings, stopping, started) -> None:
        """The control thread: start the hot thread, look at the shared counters every TICK, set the stop word."""
        self.rings = rings
        (ring,) = rings                       # one receiver: a TPACKET ring, or every AF_XDP queue's socket
        fds = ring.filenos()
        wait = np.zeros(W_SIZE, np.int64)
        wait[W_MODE], wait[W_NAP_US], wait[W_NFDS] = IDLE_MODES[self.options.idle], self.options.nap_us, len(fds)
        hot = threading.Thread(target=self._hot, args=(ring, wait, poll_set(fds)), name="appliance-hot",
                               daemon=True)
        last_frames, last_frame_at = 0, time.monotonic()
        if self.region is not None:
            self.region.set_state(R.STATE_RUNNING)
        hot.start()
        try:
            while stopping["flag"] is None and hot.is_alive():
                if self.predecessor is not None:
                    self.predecessor.wait(TICK)          # a successor's ``yield`` is acted on at once
                else:
                    time.sleep(TICK)
                now = time.monotonic()
                frames = int(self.cap[CAP_FRAMES])
                if frames != last_frames:
                    last_frames, last_frame_at = frames, now
                self._tick_watch(frames, stopping)
                self._tick_handover(stopping)
                for proc in self._cold():
                    if proc.check():
                        self.log(proc.ended)
                if self.status is not None:
                    self.status(self)
                stopping["flag"] = (stopping["flag"] or self.trouble
                                    or self._should_stop(now, started, last_frame_at, stopping))
        finally:
            wait[W_STOP] = 1                  # the kernel sees it within POLL_SLICE_MS, or at once when busy
            hot.join()
            if self.predecessor is not None:
                self.predecessor.stopped()    # AF_XDP: the successor goes on from where our ring kernel stopped
        if self.hot_error is not None:
            raise self.hot_error
        self.stop_reason = stopping["flag"] or self.trouble

    def _hot(self, ring, wait, pollfds) -> None:
        """The hot thread: the ring kernel, called again whenever it returns, until the stop word is set.
        Signals stay with the control thread (blocked here), so they never cut a kernel's poll() short."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HOT_SIGNALS)
        dec = self.decoder
        try:
            self._prioritise()
            while not wait[W_STOP]:
                wait[W_DEADLINE] = time.monotonic_ns() + HOT_DEADLINE_NS
                status, _ = ring.receive(BUDGET_FRAMES, self.rx, wait, pollfds)
                if wait[W_ERROR]:
                    wait[W_ERROR] = 0
                    self.trouble = self._socket_trouble(ring)
                    if self.trouble:
                        return
                if status == OUT_FULL:
                    dec.flush()               # a buffer the driver keeps (gaps, broken trades) filled
        except BaseException as err:          # raised again in the control thread
            self.hot_error = err

    def _place(self) -> None:
        """Keep the cold side off the hot core: with ``hot_cpu``, the output process and this (control) thread run
        on ``output_cpus`` (default: every CPU allowed here but the hot one); the hot thread pins itself."""
        o = self.options
        cold = o.output_cpus
        if cold is None and o.hot_cpu is not None:
            cold = sorted(os.sched_getaffinity(0) - {o.hot_cpu}) or None
        if cold:
            os.sched_setaffinity(0, cold)                      # this thread only: Linux affinity is per thread
            for proc in self._cold():
                os.sched_setaffinity(proc.pid, cold)

    def _prioritise(self) -> None:
        """In the hot thread: pin it to ``hot_cpu`` and give it SCHED_FIFO ``hot_rt``.  Safety: a real-time thread
        that never sleeps would starve its core, so the kernel's RT throttling must be on
        (kernel.sched_rt_runtime_us, by default 950,000 of every 1,000,000 us: other tasks keep 5% of the core
        whatever the loop does) -- checked by ``capture`` before it starts -- and with ``--idle poll`` or ``nap``
        the thread sleeps whenever its ring is empty.  ``--idle spin`` is refused with it: the throttling then
        stops a spinning thread for ~50 ms of every second (measured here: a 47.7 ms gap)."""
        o = self.options
        tid = threading.get_native_id()
        try:
            if o.hot_cpu is not None:
                os.sched_setaffinity(tid, {o.hot_cpu})
            if o.hot_rt is not None:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(o.hot_rt))
        except OSError as err:
            what = f"SCHED_FIFO {o.hot_rt} (needs CAP_SYS_NICE)" if o.hot_rt is not None else f"CPU {o.hot_cpu}"
            raise UserError(f"cannot give the hot thread {what}: {err.strerror or err}") from None

    def _socket_trouble(self, ring) -> str | None:
        """poll() flagged a socket: stop if the interface is gone, else log the socket's error (reading it
        clears it) and pause briefly, so a link that stays down does not turn the wait into a spin."""
        if not os.path.exists(f"/sys/class/net/{self.options.iface}"):
            return "interface_gone"
        for err in ring.socket_errors():
            if err:
                self.log(f"{self.options.iface}: {os.strerror(err)}")
        time.sleep(0.01)
        return None

    def _should_stop(self, now: float, started: float, last_frame_at: float, stopping: dict) -> str | None:
        o = self.options
        if o.duration is not None and time.perf_counter() - started >= o.duration:
            return "duration"
        if not os.path.exists(f"/sys/class/net/{o.iface}"):
            return "interface_gone"               # --idle spin never sees poll() flag it
        mold = self.decoder.mold
        n = int(mold.ss_meta[SS_COUNT])
        if (o.stop_at_end_of_session and n and all(mold.ss_ended[:n]) and mold.ss_meta[SS_RESOLVE] == 0
                and now - last_frame_at >= o.linger):
            return "end_of_session"
        if o.stop_at_end_of_session and stopping.get("peer_ended") and now - last_frame_at >= o.linger:
            return "peer_end_of_session"          # SIGUSR1: another fan-out worker saw the end of session
        return None

    # -- for the status line ----------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        cnt = self.decoder.cnt
        return {"frames": int(self.cap[CAP_FRAMES]), "packets": int(cnt[C.PACKETS]),
                "messages": int(cnt[C.MESSAGES]),
                "gaps": self.region.published(R.GAPS) if self.region is not None else len(self.decoder.result.gaps)}


def ring_sizes(options: CaptureOptions) -> dict[int, int]:
    """Rows per shared ring: top of book and the tape at ``ring_rows`` (48 and 56 MiB at the default 2**20, about a
    second of a busy feed's rows for a consumer to be late by), messages (80 bytes a row) and packets only when
    asked for, gaps 2**16."""
    n, d = options.ring_rows, options.decode
    return {R.BBO: n, R.TAPE: n, R.MESSAGES: n if d.messages else 0,
            R.PACKETS: max(R.MIN_ROWS, n // 4) if d.packets else 0, R.GAPS: 1 << 16}
