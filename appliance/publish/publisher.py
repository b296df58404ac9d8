"""The NATS publisher: a cold-side consumer process that sends the capture's rows to NATS JetStream.

``python -m appliance.publish.publisher SPEC``, started like the table writer (``cold.output``; the capture's
handle is ``PublisherProcess``) with the region's memfd, a life pipe and a status pipe.  It reads every ring
with a consumer slot of its own, folds VWAP windows from the tape (the same fold the tables use) and encodes
rows as records (``records``' layout, written by ``wire``'s kernels straight from the rows: no Python object per
record), which wait in two places until NATS takes them:

* top of book, **conflated per locate**: a newer bbo row for a locate whose last one is still unsent replaces
  it (counted: ``conflated``), so a slow server costs intermediate tops, never the latest;
* trades, broken trades, VWAP windows and status in a **bounded queue** (``buffer_records``; status has its
  own small one): a record that finds it full is dropped and counted (``dropped``).

Nothing here can slow the capture: the rings never wait for a consumer, and this process only ever waits for
NATS with the rings drained (every ``POLL_MS``, ``IDLE_POLL_MS`` while the feed is quiet).  A record gets its
sequence number when it is first sent, so the sequences are contiguous over everything this publisher sends;
what it drops is told to consumers by a ``publisher loss`` status (cumulative counts), sent when they change, at
most once a second, and at the end.

JetStream: on each (re)connection the stream of the feed (``records.stream_name``) is created if missing, with
retention by age and size from the spec.  Each record is published with the header
``Nats-Msg-Id: <publisher hex>-<sequence>`` (the stream suppresses a second copy within its duplicate window);
one record in ``ACK_EVERY``, and the last of each pass, also with a reply inbox, and its acknowledgement
acknowledges every record before it: a record is stored only right after its predecessor (the expected last id
below), so a stored record means a stored chain back to the last record acknowledged before it was sent (one
acknowledgement to process per 256 records, not one per record).  The records of a pass go out as one buffer of
HPUB commands that ``wire.frames`` writes (nats-py's ``publish`` cost ~10 us a record in header checks and byte
building alone).  A record refused without a reply inbox is noticed all the same: the records after it expect
it, so they are refused too, up to the next one that asks, whose error reply (or silence: ``ack_timeout_s``)
has the window sent again.  At most ``ack_window`` records are unacknowledged at once; after an error reply, or
when the oldest has waited ``ack_timeout_s``, or after a reconnection, every unacknowledged record is sent
again, in order, with the same id -- so a record acknowledged once is stored once, and a record not yet
acknowledged is not given up while the publisher runs.  A record sent while the one before it is
unacknowledged also carries ``Nats-Expected-Last-Msg-Id`` (the id of the record before it), so the stream
stores it only right after its predecessor: a connection drop loses a suffix of what was sent, but what the
client had buffered while disconnected is flushed to the next node before the resend, and without the check
those later records would be stored ahead of the lost ones (a gap, then the missing records out of order, for
every consumer). With it they are refused (an error reply) and stored in
order by the resend. A record whose predecessor is acknowledged carries no expectation: the predecessor is stored,
so nothing can come between, and a server restarted after the publisher was idle for longer than the duplicate
window knows no last id (it rebuilds it from the records inside the window) and would refuse every expectation for
ever. So one feed has one publisher at a time (a second one on the same stream would have its records refused).
Error replies are answered by resending the window at most every ``RESEND_EVERY_S``: a cluster electing a stream
leader answers every record with "no responders".

End: the capture sets ``STATE_FINISHED``: the rings are drained, ``session end`` status records queued, and
the publisher waits up to ``flush_s`` for everything queued to be acknowledged; what is still unacknowledged
then is counted (``unacknowledged_at_exit``).  The capture dying (life pipe hangs up) ends it the same way,
exit 1.  Counts are kept live in the slot's own words (``OWN``) and reported at exit on the status pipe
(``report {json}``) and in one line on stderr.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import select
import sys
import time
from collections import deque

import numpy as np

from appliance.cold.output import ColdProcess, child_start, refuse
from appliance.cold.rows import BBO, CS_DELIVERED, CS_OWN, GAPS, N_RINGS, PACKETS, STATE_FINISHED, TAPE, Reader, \
    Region
from appliance.decode.state import BBO_TS, SS_COUNT, TAPE_TS
from appliance.errors import UserError
from appliance.publish import convert, wire
from appliance.publish import records as R

# Between passes with nothing to send it sleeps POLL_MS while rows came within the last QUIET_S (rows wait at
# most that long to be sent: the bench's receive-to-consumer p50 went from 17 to 3.5 ms when this was 20), and
# IDLE_POLL_MS once the feed is quiet (a pass costs ~170 us with the event loop: 8.6% of a core at 2 ms).
POLL_MS, IDLE_POLL_MS, QUIET_S = 2, 20, 1.0
BEHIND_ROWS = 4096
STATUS_BUFFER = 4096
LOSS_EVERY_S = 1.0

# The counts, in the consumer slot's own words (ring, word): live for any reader of the region (metrics).
OWN = {"conflated": (BBO, CS_OWN), "dropped": (BBO, CS_OWN + 1), "sent": (BBO, CS_OWN + 2),
       "acknowledged": (BBO, CS_OWN + 3), "resent": (TAPE, CS_OWN), "ack_errors": (TAPE, CS_OWN + 1),
       "connected": (TAPE, CS_OWN + 2), "unacknowledged_at_exit": (TAPE, CS_OWN + 3),
       "vwap_late_trades": (GAPS, CS_OWN), "reconnected": (GAPS, CS_OWN + 1)}
# What the slot is and where it sends, in the packets line's own words: ``MARK`` says "a publisher holds this slot"
# (metrics export the counts of such slots), ``SERVER_PORT`` is the port of the NATS server it is connected to
# now (0 while it is not): which node of a cluster it depends on.
MARK_WORD, SERVER_PORT_WORD = (PACKETS, CS_OWN), (PACKETS, CS_OWN + 1)
MARK = 0x4255504E53544E41          # "ANTSNPUB" little-endian
RESEND_EVERY_S = 0.2               # after an error reply, the soonest the window is sent again (a leader election)
ACK_EVERY = 256                    # a record in this many (and the last of each pass) asks for an acknowledgement
DEFAULTS = {"servers": ["nats://127.0.0.1:4222"], "encoding": "binary", "window_ns": 1_000_000_000,
            "step_ns": 100_000_000, "buffer_records": 1 << 16, "ack_window": 16384, "ack_timeout_s": 2.0,
            "flush_s": 10.0, "max_age_s": 86400.0, "max_bytes": -1, "replicas": 1, "duplicate_window_s": 120.0,
            "nice": 10, "slot": None}


class PublisherProcess(ColdProcess):
    """The capture's handle on a publisher process (``spec``: ``feed`` and the keys of ``DEFAULTS``)."""

    module = "appliance.publish.publisher"
    what = "NATS publisher"
    lost = "nothing more is published (the capture goes on: books, tables and recording are complete)"

    def __init__(self, region: Region, spec: dict):
        super().__init__(region, dict(DEFAULTS, **spec))

    def report(self) -> dict | None:
        """The counts the process reported at exit (after ``finish``), or None."""
        for line in self.reports:
            if line.startswith("report "):
                return json.loads(line[len("report "):])
        return None


class Outbox:
    """What waits for NATS, encoded (``wire``): the latest unsent bbo per locate, the bounded queue, status, and the
    counts."""

    def __init__(self, limit: int, publisher: int):
        self.tops, self.queue = wire.Tops(), wire.Queue(limit)
        self.status: deque = deque()                # Status records (few): encoded when sent
        self.id, self.publisher = publisher, wire.as_i64(publisher)     # the u64 id, and as the kernels take it
        self.counts = dict.fromkeys(OWN, 0)

    def add_bbo(self, rows: np.ndarray, sym) -> None:
        t = self.tops
        self.counts["conflated"] += wire.add_tops(rows, len(rows), sym, self.publisher, t.latest, t.waiting, t.fifo,
                                                  t.state)

    def add_tape(self, rows: np.ndarray, sym) -> None:
        q = self.queue
        self.counts["dropped"] += wire.add_tape(rows, len(rows), sym, self.publisher, q.slab, q.lens, q.state)

    def add_vwap(self, rows: np.ndarray, n: int, sym, window_ns: int) -> None:
        q = self.queue
        self.counts["dropped"] += wire.add_vwap(rows, n, sym, self.publisher, window_ns, q.slab, q.lens, q.state)

    def add_status(self, record) -> None:
        if len(self.status) >= STATUS_BUFFER:
            self.counts["dropped"] += 1
        else:
            self.status.append(record)

    def take(self, window, wlens, seq: int, most: int) -> int:
        """Up to ``most`` records -- status first, then trades and windows, then tops -- into the in-flight
        window as sequences ``seq``...; returns how many."""
        k, w = 0, len(wlens)
        while self.status and k < most:
            data = R.encode(self.status.popleft(), self.id, seq + k)
            window[(seq + k) % w, :len(data)] = np.frombuffer(data, np.uint8)
            wlens[(seq + k) % w] = len(data)
            k += 1
        q, t = self.queue, self.tops
        k += wire.take_queue(q.slab, q.lens, q.state, window, wlens, seq + k, most - k)
        k += wire.take_tops(t.latest, t.waiting, t.fifo, t.state, window, wlens, seq + k, most - k)
        return k

    def __len__(self) -> int:
        return len(self.status) + len(self.queue) + len(self.tops)


class _VwapSink:
    def __init__(self, outbox: Outbox, window_ns: int):
        self.outbox, self.window_ns = outbox, window_ns

    def vwap(self, rows, n, sym, last) -> None:
        self.outbox.add_vwap(rows, n, sym, self.window_ns)


class Publisher:
    """The process's state: reading the rings into the outbox (``drain``) and sending it (``pump``)."""

    def __init__(self, region: Region, spec: dict):
        from appliance.decode import counters as C
        from appliance.replay.decoder import VwapFold

        self.region, self.spec = region, spec
        self.reader = Reader(region, spec["slot"])
        r, word = MARK_WORD
        region.consumer(r, self.reader.slot)[word] = MARK
        self.id = secrets.randbits(64) or 1
        self.outbox = Outbox(spec["buffer_records"], self.id)
        self.late = np.zeros(C.SIZE, np.int64)
        self._late_slot = C.VWAP_LATE_TRADES
        self.fold = VwapFold(spec["window_ns"], spec["step_ns"], self.late)
        self.sink = _VwapSink(self.outbox, spec["window_ns"])
        self.feed = spec["feed"]
        self.json = spec["encoding"] == "json"
        self.seq = 0                                  # the last sequence sent
        self.acked = 0                                # every sequence up to this one is acknowledged
        self.last_ts = 0
        self.sessions = 0
        self.ring_lost = 0
        self.loss_said, self.loss_at = (0, 0), 0.0
        # The in-flight window: record s (acked < s <= seq) at row s % W, sent (last) at sent_at[s % W].
        w = spec["ack_window"]
        self.window, self.wlens = np.zeros((w, wire.REC), np.uint8), np.zeros(w, np.int64)
        self.sent_at = np.zeros(w, np.float64)
        self.framer: wire.Framer | None = None        # made once the ack inbox is known
        self.resend = False
        self.resent_at = 0.0
        self.nc = None
        self.ready = False                                          # connected, stream there, acks subscribed
        self.outbox.add_status(R.Status(0, 0, 0, code=R.STATUS_PUBLISHER_START))

    # -- the rings --------------------------------------------------------------------------------------------
    def drain(self) -> int:
        region, sym, moved = self.region, self.region.sym, 0
        rows, lost = self.reader.take(BBO)
        self.ring_lost += lost
        if len(rows):
            self.last_ts = max(self.last_ts, int(rows[-1, BBO_TS]))
            self.outbox.add_bbo(rows, sym)
            moved += len(rows)
        self._sessions()
        rows, lost = self.reader.take(TAPE)
        self.ring_lost += lost
        if len(rows):
            self.fold.feed(rows, len(rows), self.sink, sym)
            self.outbox.add_tape(rows, sym)
            self.last_ts = max(self.last_ts, int(rows[-1, TAPE_TS]))
            moved += len(rows)
        rows, lost = self.reader.take(GAPS)
        self.ring_lost += lost
        for row in rows:
            self.outbox.add_status(convert.gap(row, region.ss_name, self.last_ts))
        moved += len(rows)
        self._loss(False)
        self.publish_counts()
        return moved

    def _sessions(self) -> None:
        count = int(self.region.ss_meta[SS_COUNT])
        for s in range(self.sessions, min(count, len(self.region.ss_name))):
            self.outbox.add_status(R.Status(0, 0, self.last_ts, code=R.STATUS_SESSION_START,
                                            session=convert.session_name(self.region.ss_name, s)))
        self.sessions = max(self.sessions, count)

    def _loss(self, final: bool) -> None:
        now = (self.outbox.counts["dropped"], self.ring_lost)
        if now != self.loss_said and (final or time.monotonic() - self.loss_at >= LOSS_EVERY_S):
            self.outbox.add_status(R.Status(0, 0, self.last_ts, code=R.STATUS_LOSS, first=now[0], last=now[1]))
            self.loss_said, self.loss_at = now, time.monotonic()

    def finish_rows(self) -> None:
        """The capture finished: the last VWAP windows, session end for every session, the final loss."""
        self.fold.finish(self.sink, self.region.sym)
        self._sessions()
        for s in range(self.sessions):
            self.outbox.add_status(R.Status(0, 0, self.last_ts, code=R.STATUS_SESSION_END,
                                            session=convert.session_name(self.region.ss_name, s)))
        self._loss(True)

    def caught_up(self) -> bool:
        return all(self.reader.behind(r) == 0 for r in range(N_RINGS))

    def publish_counts(self) -> None:
        c = self.outbox.counts
        c["sent"], c["connected"] = self.seq, int(self.ready)
        c["vwap_late_trades"] = int(self.late[self._late_slot])
        for name, (r, word) in OWN.items():
            self.region.consumer(r, self.reader.slot)[word] = c[name]
        url = self.nc.connected_url if self.nc is not None and self.nc.is_connected else None
        r, word = SERVER_PORT_WORD
        self.region.consumer(r, self.reader.slot)[word] = (url.port or 4222) if url is not None else 0

    # -- NATS -------------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect (trying for as long as the process runs), then make the stream and the ack subscription."""
        import nats

        self.nc = await nats.connect(servers=self.spec["servers"], allow_reconnect=True, max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.25, connect_timeout=1, name=f"appliance-{self.feed}",
                                     pending_size=1 << 24, error_cb=self._on_error,
                                     disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect)
        inbox = self.nc.new_inbox()
        self.framer = wire.Framer(self.feed, inbox, self.id, ACK_EVERY, len(self.wlens))
        await self.nc.subscribe(f"{inbox}.*", cb=self._on_ack)
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        from nats.js.errors import NotFoundError

        js = self.nc.jetstream(timeout=2)
        name = R.stream_name(self.feed)
        while True:
            try:
                try:
                    await js.stream_info(name)
                except NotFoundError:
                    await js.add_stream(name=name, subjects=[R.feed_filter(self.feed)], max_age=self.spec["max_age_s"],
                                        max_bytes=self.spec["max_bytes"], num_replicas=self.spec["replicas"],
                                        duplicate_window=self.spec["duplicate_window_s"], storage="file")
                self.ready, self.resend = True, True
                return
            except Exception as err:                  # noqa: BLE001 -- a server not (yet) answering JetStream
                print(f"appliance: NATS publisher: stream {name} not ready ({type(err).__name__}: {err}); "
                      f"trying again", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)

    async def _on_error(self, err) -> None:
        pass                                          # reconnection is the client's; the counts say what it cost

    async def _on_disconnect(self) -> None:
        self.ready = False

    async def _on_reconnect(self) -> None:
        self.outbox.counts["reconnected"] += 1
        asyncio.get_running_loop().create_task(self._ensure_stream())   # the server may have lost the stream

    async def _on_ack(self, msg) -> None:
        seq = int(msg.subject.rsplit(".", 1)[1])
        if seq <= self.acked:
            return                                    # an ack for a copy we sent again: already counted
        try:
            ack = json.loads(msg.data) if msg.data else {}
        except ValueError:
            ack = {}
        if "seq" in ack and "error" not in ack:
            # Stored: and so is every record before it (the chain of expected last ids, see the docstring).
            self.outbox.counts["acknowledged"] += seq - self.acked
            self.acked = seq
        else:                                         # an API error or no responders (503): send again
            self.outbox.counts["ack_errors"] += 1
            self.resend = True

    async def pump(self) -> None:
        if not self.ready or not self.nc.is_connected:
            return
        now, w = time.monotonic(), len(self.wlens)
        if self.resend and now - self.resent_at < RESEND_EVERY_S:
            return
        oldest = self.sent_at[(self.acked + 1) % w]
        if self.seq > self.acked and (self.resend or now - oldest > self.spec["ack_timeout_s"]):
            self.resent_at = now
            self.sent_at[:] = now
            first, last = self.acked + 1, self.seq
            await self._send(first, last)
            self.outbox.counts["resent"] += last - first + 1
        self.resend = False
        room = w - (self.seq - self.acked)
        k = self.outbox.take(self.window, self.wlens, self.seq + 1, room) if room > 0 else 0
        if k:
            first, self.seq = self.seq + 1, self.seq + k
            lo, hi = first % w, self.seq % w              # k <= W rows: one slice of sent_at, or two
            if lo <= hi:
                self.sent_at[lo:hi + 1] = now
            else:
                self.sent_at[lo:], self.sent_at[:hi + 1] = now, now
            await self._send(first, self.seq)

    async def _send(self, first: int, last: int) -> None:
        """Sequences ``first``..``last`` of the window, as one buffer of HPUB commands (``wire.frames``): the same
        bytes nats-py's ``publish`` writes, without a Python call and header dict per record.  nats-py has no
        public call that takes protocol bytes; ``_send_command`` and ``_flush_pending`` are what its ``publish``
        uses (present in every 2.x release; checked at start)."""
        blob = offsets = None
        if self.json:
            w, parts = len(self.wlens), []
            for s in range(first, last + 1):
                r = s % w
                parts.append(R.to_json(R.decode(self.window[r, :self.wlens[r]].tobytes())).encode())
            offsets = np.zeros(len(parts) + 1, np.int64)
            np.cumsum([len(p) for p in parts], out=offsets[1:])
            blob = np.frombuffer(bytearray(b"".join(parts)), np.uint8)     # writable: the type wire.warm compiled
        data = self.framer.frame(self.window, self.wlens, first, last, self.acked, blob, offsets)
        nc = self.nc
        try:
            await nc._send_command(data)
            if nc._flush_queue is not None and nc._flush_queue.empty():
                await nc._flush_pending()
        except Exception:                             # noqa: BLE001 -- disconnected, buffer full: resent later
            self.resend = True

    def pending(self) -> int:
        return len(self.outbox) + self.seq - self.acked


async def run(pub: Publisher, life_fd: int) -> str:
    poller = select.poll()
    poller.register(life_fd, select.POLLIN)
    connecting = asyncio.get_running_loop().create_task(pub.connect())
    how, rows_at = None, 0.0
    try:
        while how is None:
            finished = pub.region.state == STATE_FINISHED
            moved = pub.drain()
            if moved:
                rows_at = time.monotonic()
            await pub.pump()
            if moved >= BEHIND_ROWS or (pub.ready and len(pub.outbox) and pub.seq - pub.acked < pub.spec["ack_window"]):
                await asyncio.sleep(0)        # behind, or records waiting with room to send them: no nap
                continue
            if (finished or poller.poll(0)) and pub.caught_up():
                how = "finished" if finished else "producer_gone"
                break
            await asyncio.sleep((POLL_MS if time.monotonic() - rows_at < QUIET_S else IDLE_POLL_MS) / 1000)
        pub.finish_rows()
        deadline = time.monotonic() + pub.spec["flush_s"]
        while pub.pending() and time.monotonic() < deadline:
            await pub.pump()
            pub.publish_counts()
            await asyncio.sleep(0.005 if pub.ready else 0.05)
    finally:
        pub.outbox.counts["unacknowledged_at_exit"] = pub.pending()
        pub.publish_counts()
        connecting.cancel()
        if pub.nc is not None:
            try:
                await asyncio.wait_for(pub.nc.close(), 2)
            except Exception:                         # noqa: BLE001 -- closing a dead connection
                pass
    return how


def main(argv: list[str]) -> int:
    spec, status, region = child_start(argv)
    spec = dict(DEFAULTS, **spec)
    try:
        if spec["encoding"] not in ("binary", "json"):
            raise UserError(f"NATS publisher: encoding {spec['encoding']!r} is not binary or json")
        R.stream_name(spec.get("feed", ""))
        from nats.aio.client import Client
        if not (hasattr(Client, "_send_command") and hasattr(Client, "_flush_pending")):
            raise UserError("NATS publisher: this nats-py has no Client._send_command/_flush_pending, which the "
                            "publisher writes its commands through (every 2.x release has them)")
    except ImportError:
        return refuse(status, UserError("NATS publisher: the nats-py package is not installed (pip install nats-py)"))
    except (UserError, R.RecordError) as err:
        return refuse(status, UserError(str(err)))
    try:                                              # below the capture: publishing takes what receive leaves
        os.setpriority(os.PRIO_PROCESS, 0, max(spec["nice"], os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError as err:                            # lowering it is allowed; keep what we have otherwise
        print(f"appliance: NATS publisher: cannot set nice {spec['nice']} ({err.strerror}); running at "
              f"{os.getpriority(os.PRIO_PROCESS, 0)}", file=sys.stderr, flush=True)
    pub = Publisher(region, spec)
    from appliance.decode.vwap import feed_trades
    feed_trades(pub.reader.buffers[TAPE][:0], 0, 0, pub.fold.vw, pub.fold.cnt)     # load the kernels before ready
    wire.warm()
    status.write("ready\n")
    status.flush()
    try:
        how = asyncio.run(run(pub, spec["life_fd"]))
    finally:
        pub.reader.detach()
    counts = dict(pub.outbox.counts, publisher=f"{pub.id:016x}", ring_lost=pub.ring_lost,
                  cpu_seconds=round(time.process_time(), 3),
                  rows={name: int(region.consumer(r, pub.reader.slot)[CS_DELIVERED])
                        for name, r in (("bbo", BBO), ("tape", TAPE), ("gaps", GAPS))})
    status.write("report " + json.dumps(counts) + "\n")
    status.close()
    print(f"appliance: NATS publisher {pub.id:016x}: {counts['sent']:,} records sent, {counts['acknowledged']:,} "
          f"acknowledged, {counts['unacknowledged_at_exit']:,} not acknowledged at exit (queued or in flight), "
          f"{counts['dropped']:,} dropped "
          f"(buffer full), {counts['conflated']:,} top-of-book updates conflated, {pub.ring_lost:,} ring rows lost",
          file=sys.stderr, flush=True)
    if how == "producer_gone":
        print("appliance: NATS publisher: the capture ended without finishing; every row it published was sent "
              "or counted", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
