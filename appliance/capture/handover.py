"""Handover without loss between two TPACKET captures on one box (``--handover-socket`` / ``--take-over``).

The old capture (started with ``--handover-socket PATH``) is the only member of a PACKET_FANOUT_CBPF group whose
id the kernel picked (PACKET_FANOUT_FLAG_UNIQUEID), and listens on the AF_UNIX stream socket PATH.  The new
capture (``--take-over PATH``) and the old one then speak one JSON object a line:

1. new -> old ``hello``: the old one points the group's program at itself (``RET 0``: it joined first) and
   answers ``group`` (group id, its pid and feeds).  The new one refuses to go on if the feeds differ (a frame
   the new filter refused after the switch would be lost to both).
2. The new one opens its ring holding its place (a filter that keeps nothing), joins the group as member 1 --
   the program still sends every frame to member 0 -- puts its feed filter on, warms its kernels, starts its
   hot thread, and only then swaps the program for ``RET 1`` (PACKET_FANOUT_DATA).  The kernel picks exactly
   one member per frame: each frame is in exactly one of the two rings.  The swap waits for an RCU grace period
   (synchronize_net), so when it returns every frame sent to the old member is already in the old ring.
3. new -> old ``switched``.  The old one removes PATH, then drains: it keeps reading until the frames taken off
   its ring equal the frames the kernel put there (PACKET_STATISTICS tp_packets minus tp_drops; V3's last
   block comes when the retire timer hands it over), stops (``stop_reason`` ``handover``), closes its ring --
   leaving the group, the new one becomes member 0 -- and only then sends ``left`` (its frames and the next
   sequence number it expected per session) and exits 0 after writing its outputs.
4. After ``left`` (or the old one's end of connection), the new one is alone in the group and, with its own
   ``--handover-socket``, listens for the next one.

A new capture that dies before step 2's swap leaves the old one taking every frame; an old one that dies after
it loses only what was still in its ring (the group then has the new one alone).  The new capture's books
start mid-session: summary.json ``capture.handover.sessions`` gives each session's first sequence number.

**AF_XDP** (``--engine xdp``): a queue takes one socket, and a second UMEM on a bound queue is refused (EBUSY),
so the XSKMAP cannot simply point at a new socket.  The new capture takes the old one's *sockets* instead --
the very rings the kernel fills -- and the index in them is the hand-off point:

1. new -> old ``hello``; old -> new ``xdp`` with, over SCM_RIGHTS, the BPF link, program and map fds and each
   queue's socket and UMEM memfd (the UMEM is a memfd for this).  The old one goes on receiving.
2. The new one maps the UMEM and rings, warms up and starts everything but its hot thread, then says ``yield``.
3. The old one stops its hot thread -- the last chunks it took are back in the fill ring and its rx consumer
   index is stored -- marks the link not to be detached, and answers ``stopped``: each queue's rx consumer and
   fill producer index and the socket and program counters as they stand.  The new one checks the indices in
   the rings match, counts statistics from those figures (each drop is counted by exactly one of the two), and
   starts its hot thread at that consumer index.  Frames arriving meanwhile wait in the rx ring (full: the
   kernel counts them, the new one reports them); none is taken twice, because one index is passed on.
4. The old one writes its outputs, closes its fds (the sockets and link live on in the new process), sends
   ``left`` and exits 0.

If the old capture ends before ``stopped`` (a signal, the end of session) the new one says so and exits 2:
the old one detached the program on its way out.  The program's link now lives in the new process: it is
detached when that one exits, or handed on again.
"""
from __future__ import annotations

import json
import os
import select
import socket
import time

from appliance.errors import UserError
from appliance.ring.deliver import CAP_FRAMES, CAP_RING_MALFORMED

DRAIN_LIMIT = 5.0            # seconds the old capture drains at most after the switch (then stops and says so)
CONNECT_LIMIT = 10.0         # seconds the new capture waits for the old one's answer
LEFT_WAIT = 2.0              # seconds the new capture, ending, waits for the old one to say what it took


def _send(sock: socket.socket, msg: dict) -> None:
    sock.sendall((json.dumps(msg) + "\n").encode())


def _lines(sock: socket.socket, buf: bytearray) -> tuple[list[dict], bool]:
    """Whole messages received so far (non-blocking) and whether the peer closed."""
    closed = False
    while True:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            closed = True
            break
        if not data:
            closed = True
            break
        buf += data
    out = []
    while b"\n" in buf:
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        try:
            out.append(json.loads(line))
        except ValueError:
            closed = True               # not our protocol: drop the peer
    return out, closed


def session_marks(mold) -> list[dict]:
    """Per session: the first sequence number this capture saw and the next one it expected."""
    from appliance.decode.state import SS_COUNT
    from appliance.replay.summary import _name

    return [{"session": _name(mold.ss_name[s]), "first_sequence": int(mold.ss_first[s]),
             "next_sequence": int(mold.ss_next[s]), "started_mid_session": int(mold.ss_first[s]) > 1}
            for s in range(int(mold.ss_meta[SS_COUNT]))]


class Predecessor:
    """The old capture's side: listen on ``path``, hand the feed to one successor, drain, say ``left``."""

    def __init__(self, path: str, log):
        self.path, self.log = path, log
        self.listener = self.peer = None
        self.buf = bytearray()
        self.ring = None
        self.switched_at: float | None = None       # time.monotonic() of the successor's ``switched``
        self.info: dict = {}

    def listen(self, ring, feeds, program=None) -> None:
        """``program``: AF_XDP's steering program (the rings are then an ``XskReceiver``); None for TPACKET."""
        self.ring, self.feeds, self.program = ring, feeds, program
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(self.path)
        except OSError as err:
            self.listener.close()
            self.listener = None
            raise UserError(f"cannot listen on --handover-socket {self.path}: {os.strerror(err.errno)}") from None
        self.listener.listen(1)
        self.listener.setblocking(False)
        where = f"fan-out group {ring.fanout[0]}" if program is None else f"{len(ring.sockets)} AF_XDP socket(s)"
        self.log(f"handover: listening on {self.path} ({where})")

    def tick(self, cap) -> str | None:
        """The control thread's look, every tick: a successor's messages; ``handover`` once drained."""
        if self.listener is not None and self.peer is None and self.switched_at is None:
            try:
                self.peer, _ = self.listener.accept()
                self.peer.setblocking(False)
            except (BlockingIOError, InterruptedError):
                pass
        if self.peer is not None and self.switched_at is None:
            msgs, closed = _lines(self.peer, self.buf)
            for msg in msgs:
                self._on(msg)
            if closed and self.switched_at is None:
                self.log("handover: the successor went away before the switch; still taking the feed")
                self._drop_peer()
        if self.switched_at is not None:
            return self._drained(cap)
        return None

    def wait(self, seconds: float) -> None:
        """The control thread's pause between ticks: cut short by a successor's message, so that ``yield`` stops
        us at once (AF_XDP: the feed waits in the rx ring meanwhile)."""
        ready = [s for s in (self.peer, self.listener) if s is not None]
        if ready:
            select.select(ready, [], [], seconds)
        else:
            time.sleep(seconds)

    def _on(self, msg: dict) -> None:
        xdp = self.program is not None
        if msg.get("op") == "hello" and msg.get("engine", "tpacket") != ("xdp" if xdp else "tpacket"):
            _send(self.peer, {"op": "refused", "why": f"the running capture uses --engine "
                                                     f"{'xdp' if xdp else 'tpacket'}; a handover needs the same"})
            self._drop_peer()
        elif msg.get("op") == "hello" and xdp:
            self.info["successor_pid"] = msg.get("pid")
            socks = self.ring.sockets
            first = socks[0]
            offer = {"op": "xdp", "pid": os.getpid(), "feeds": [list(f) for f in self.feeds],
                     "interface": first.ifname, "queues": [x.queue for x in socks], "frames": first.frames,
                     "chunk": first.chunk, "ring": first.ring_size, "magic": first.magic,
                     "zerocopy": [x.zerocopy for x in socks], "hugepages": [x.on_hugepages for x in socks],
                     "attach_mode": self.program.mode_attached}
            fds = self.program.handover_fds() + [fd for x in socks for fd in (x.fileno(), x.umem_fd)]
            self.peer.setblocking(True)
            socket.send_fds(self.peer, [(json.dumps(offer) + "\n").encode()], fds)
            self.peer.setblocking(False)
        elif msg.get("op") == "yield" and xdp:
            self.switched_at = time.monotonic()          # the successor is ready: stop now, then ``stopped``
            self.info["switched_at_unix"] = time.time()
            self.stop_listening()
        elif msg.get("op") == "hello":
            self.ring.steer_to(0)                    # every frame to us, the first member, whoever joins next
            self.info["successor_pid"] = msg.get("pid")
            _send(self.peer, {"op": "group", "group": self.ring.fanout[0], "pid": os.getpid(),
                              "feeds": [list(f) for f in self.feeds], "tpacket_version": self.ring.version})
        elif msg.get("op") == "switched":
            self.switched_at = time.monotonic()
            self.info["switched_at_unix"] = time.time()
            self.info["switch_us"] = msg.get("switch_us")
            self.stop_listening()                   # no second successor: the next one asks the new capture

    def _drained(self, cap) -> str | None:
        if self.program is not None:
            return "handover"                        # AF_XDP: nothing to drain, the successor reads our rings
        s = self.ring.stats()
        put = s["kernel_packets"] - s["ring_drops"]
        taken = int(cap[CAP_FRAMES]) + int(cap[CAP_RING_MALFORMED])
        waited = time.monotonic() - self.switched_at
        if taken >= put or waited >= DRAIN_LIMIT:
            self.info["drain_seconds"] = round(waited, 4)
            self.info["drained"] = taken >= put
            if taken < put:
                self.log(f"handover: {put - taken:,} frames still in the ring after {DRAIN_LIMIT:g} s; stopping")
            return "handover"
        return None

    def stopped(self) -> None:
        """AF_XDP, right after our hot thread stopped for good: tell the successor where the rings stand (it starts
        there) and leave the program attached for it."""
        if self.program is None or self.switched_at is None or self.peer is None:
            return
        handed = self.ring.hand_over()
        handed["xdp_counters"] = self.program.hand_over_counters()
        self.program.handed_over()
        self.info["pause_from_yield_us"] = round((time.monotonic() - self.switched_at) * 1e6, 1)
        self.info["stopped_at"] = handed["queues"]
        self.info["drained"] = True                  # nothing was left behind: the rings went with the sockets
        try:
            self.peer.setblocking(True)
            _send(self.peer, {"op": "stopped", **handed})
        except OSError:
            self.log("handover: the successor went away as we stopped; what arrives now is in its rings or lost")

    def left(self, mold, frames: int) -> None:
        """After the ring closed (we are out of the group): tell the successor what we took."""
        self.info["role"] = "predecessor"
        self.info["sessions"] = session_marks(mold)
        if self.peer is not None and self.switched_at is not None:
            try:
                self.peer.setblocking(True)
                _send(self.peer, {"op": "left", "pid": os.getpid(), "frames": frames,
                                  "sessions": self.info["sessions"]})
            except OSError:
                pass
        self.close()

    def _drop_peer(self) -> None:
        if self.peer is not None:
            self.peer.close()
            self.peer = None
        self.buf.clear()

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        self.stop_listening()
        self._drop_peer()


class Successor:
    """The new capture's side: ask the old one for its group, switch the feed to us once ready, note when it left."""

    def __init__(self, path: str, log):
        self.path, self.log = path, log
        self.sock = None
        self.buf = bytearray()
        self.info: dict = {"role": "successor"}
        self.gone = False

    def _hello(self, engine: str) -> tuple[dict, list[int]]:
        """Connect, say hello, and read the answer (with any fds that came with it)."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(self.path)
        except OSError as err:
            self.sock.close()
            raise UserError(f"--take-over {self.path}: no capture listens there ({os.strerror(err.errno)}); start "
                            "the running one with --handover-socket") from None
        _send(self.sock, {"op": "hello", "pid": os.getpid(), "engine": engine})
        self.sock.settimeout(CONNECT_LIMIT)
        fds: list[int] = []
        while b"\n" not in self.buf:
            try:
                data, got, _, _ = socket.recv_fds(self.sock, 65536, 64)
            except OSError:
                data, got = b"", []
            fds += got
            if not data:
                self._close_fds(fds)
                raise UserError(f"--take-over {self.path}: the running capture did not answer")
            self.buf += data
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf[:] = rest
        msg = json.loads(line)
        if msg.get("op") == "refused":
            self._close_fds(fds)
            raise UserError(f"--take-over {self.path}: {msg.get('why')}")
        return msg, fds

    @staticmethod
    def _close_fds(fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)

    def _same_feeds(self, msg: dict, feeds) -> None:
        theirs = sorted(tuple(f) for f in msg["feeds"])
        if theirs != sorted(tuple(f) for f in feeds):
            raise UserError("--take-over: the running capture receives other --feed lines; a handover needs the "
                            "same ones (a frame only one of them accepts would be lost at the switch)")

    def connect_xdp(self, iface: str, feeds, queues) -> tuple[dict, list[int]]:
        """AF_XDP, before our rings open: the predecessor's offer and its fds (link, program, maps, then per queue
        socket and UMEM).  The fds are ours to close, whatever happens next."""
        msg, fds = self._hello("xdp")
        try:
            if msg.get("op") != "xdp" or len(fds) != 5 + 2 * len(msg.get("queues", [])):
                raise UserError(f"--take-over {self.path}: the running capture did not offer its AF_XDP sockets")
            self._same_feeds(msg, feeds)
            if msg["interface"] != iface:
                raise UserError(f"--take-over: the running capture receives on {msg['interface']}, not {iface}")
            if queues is not None and sorted(queues) != sorted(msg["queues"]):
                raise UserError(f"--take-over: the running capture has queues {msg['queues']}; a handover takes "
                                "the same ones (leave --queues out)")
        except BaseException:
            self._close_fds(fds)
            raise
        self.info["predecessor_pid"] = msg["pid"]
        return msg, fds

    def take(self, receiver) -> dict:
        """AF_XDP: we are ready; ask the predecessor to stop, and go on from where it stopped."""
        t0 = time.perf_counter_ns()
        _send(self.sock, {"op": "yield"})
        self.sock.settimeout(CONNECT_LIMIT)
        while True:
            msgs, closed = self._read_blocking()
            stopped = [m for m in msgs if m.get("op") == "stopped"]
            if stopped:
                break
            if closed:
                raise UserError(f"--take-over {self.path}: the running capture ended before it handed the feed over "
                                "(it detached its program on the way out); start this one on its own")
        handed = stopped[0]
        self._note(msgs)              # "left" may have come in the same read (the old one says it right after)
        receiver.resume(handed)
        us = (time.perf_counter_ns() - t0) / 1000
        self.info["switch_us"] = round(us, 1)
        self.info["switched_at_unix"] = time.time()
        self.info["took_at"] = handed["queues"]
        self.sock.setblocking(False)
        return handed

    def _read_blocking(self) -> tuple[list[dict], bool]:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise UserError(f"--take-over {self.path}: the running capture did not stop within {CONNECT_LIMIT:g} s "
                            "of being asked") from None
        except OSError:
            data = b""
        if not data:
            return [], True
        self.buf += data
        out = []
        while b"\n" in self.buf:
            line, _, rest = bytes(self.buf).partition(b"\n")
            self.buf[:] = rest
            out.append(json.loads(line))
        return out, False

    def connect(self, feeds) -> int:
        """TPACKET, before our ring opens: the group id to join."""
        msg, fds = self._hello("tpacket")
        self._close_fds(fds)
        self._same_feeds(msg, feeds)
        self.info["predecessor_pid"] = msg["pid"]
        self.info["group"] = msg["group"]
        return msg["group"]

    def switch(self, ring) -> None:
        """We are ready: every frame from now on to us (member 1: the old capture joined first)."""
        t0 = time.perf_counter_ns()
        ring.steer_to(1)
        us = (time.perf_counter_ns() - t0) / 1000
        self.info["switch_us"] = round(us, 1)
        self.info["switched_at_unix"] = time.time()
        _send(self.sock, {"op": "switched", "switch_us": round(us, 1)})
        self.sock.setblocking(False)

    def tick(self) -> bool:
        """True once the old capture has left the group (said ``left``, or its connection ended)."""
        if self.gone:
            return False
        msgs, closed = _lines(self.sock, self.buf)
        self._note(msgs)
        if closed:
            self.gone = True
            self.info["predecessor_left_unix"] = time.time()
            if "predecessor" not in self.info:
                self.log(f"handover: the old capture (pid {self.info['predecessor_pid']}) ended without "
                         "saying it drained; what was still in its ring is lost")
            self.sock.close()
            return True
        return False

    def _note(self, msgs: list[dict]) -> None:
        for msg in msgs:
            if msg.get("op") == "left":
                self.info["predecessor"] = {k: msg.get(k) for k in ("frames", "sessions")}

    def finish(self, mold) -> dict:
        """At our end: what we know of the handover.  If the old capture has not said ``left`` yet (we may end
        first, or its word may still be unread), wait for it at most ``LEFT_WAIT`` seconds."""
        self.info["sessions"] = session_marks(mold)
        deadline = time.monotonic() + LEFT_WAIT
        while self.sock is not None and not self.gone and "predecessor" not in self.info:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.sock], [], [], wait)[0]:
                break
            self.tick()
        if self.sock is not None and not self.gone:
            self.sock.close()
        return self.info
