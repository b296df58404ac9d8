"""Row rings in shared memory: how finished rows leave the hot side, and how consumers read them.

One memfd holds everything the two sides share (``Region``): a header, one ring per row kind and the names
the rows refer to (symbols by stock locate, feed lines, session names).  The capture (the producer) creates it;
each consumer -- the output process writing the table files first, later publishers -- maps the same memory
(inherited, or ``Region.open_pid`` with the ``rows_fd`` a capture's ``--ready-file`` gives) and reads with a
cursor of its own (``Reader``).

Broadcast rings, the producer never waits.  The hot side copies each finished row into its ring slot
``seq & (rows - 1)`` and then publishes the new ``seq`` with a release store; it never looks at a consumer.
A consumer that falls more than a ring behind finds its oldest rows overwritten: it skips them and counts
them (``lost``, in its slot of the ring's control block, where the capture's summary reads them).  So a slow
or dead consumer costs the hot side nothing and the other consumers nothing; what it missed is a number, never
a silent gap.  Replay, which must lose nothing, keeps its bounded queue (``replay.writer``) instead.

Why a row read from a ring is intact: the producer releases ``seq`` after every ``PUBLISH_CHUNK`` rows at most,
so when a consumer re-reads ``seq`` (``seq2``) after copying, the producer may be writing at most indices
``seq2 .. seq2 + PUBLISH_CHUNK``, which overwrite indices below ``seq2 + PUBLISH_CHUNK - rows``.  Rows the
consumer copied at or above that bound were intact when copied; the ones below are dropped and counted.
Loads of ``seq`` are acquire (the copy cannot move above the first, or below the second: x86 keeps loads in
order, and numpy's copy is a function call the compiler cannot move across).

Layout (int64 words unless said; every part 4 KiB aligned):

* header (``H_*``): magic, version, size, the producer's state and pid, rows per ring;
* the hot side's counter blocks (``COUNTERS``: the decoder's counters, messages by type, the capture's ring
  counters, the latency histogram), written in place by the kernels, read live by anyone;
* per ring a control block of ``RING_CTL`` words: ``RC_SEQ`` (the producer's cache line), then one cache line
  per consumer slot (``CS_*``: cursor, lost, pid, rows delivered);
* the rings: ``bbo`` int64[rows, 6], ``tape`` int64[rows, 7] (trades, broken trades and feed-clock marks,
  ``decode.state.Out.trades``), ``messages`` int64[rows, 10] (session, sequence, then the 64 message bytes),
  ``packets`` int64[rows, 6], ``gaps`` int64[rows, 3]; a ring of 0 rows is off;
* names: ``sym`` uint8[65536, 8], ``sym_set``, ``ln_group``, ``ln_port``, ``ln_meta``, ``ss_meta``, ``ss_name``
  -- the decoder's own arrays live here (``Decoder.adopt``), so a consumer formats with the names as of now;
* the frame ring (when recording): ``fctl`` (``RING_CTL`` words: the producer's line, then the recorder's) and
  ``frames`` uint8[``H_FRAME_BYTES``], a power of two.  Unlike the row rings this one is single-producer,
  single-consumer and never overwritten: the hot side appends each frame as a pcap record (``ring.deliver``),
  or, when the recorder has not made room, counts it as not recorded and goes on; the recorder process
  (``cold.recording``) writes the bytes between its tail and the head to the files.  A recording must be
  whole runs of frames with every hole counted, so the oldest bytes are never the ones given up.
"""
from __future__ import annotations

import fcntl
import mmap
import os
from collections import namedtuple
from types import SimpleNamespace

import numpy as np

from appliance._jit import kernel
from appliance.decode.state import LOCATES, MAX_LINES, MAX_SESSIONS, MSG_SLOT, N_BBO, N_GAPS, N_MSGS, \
    N_PACKETS, N_TRADES
from appliance.ring.atomics import store_release_i64

MAGIC = 0x31574F5253505041        # "APPSROW1" little-endian
VERSION = 3
PAGE = 4096

H_MAGIC, H_VERSION, H_BYTES, H_STATE, H_PRODUCER_PID = range(5)
H_ROWS = 8                        # H_ROWS + r: rows of ring r (0: off)
H_COUNTERS = 16                   # H_COUNTERS + k: words of counter block COUNTERS[k]
H_FRAME_BYTES = 24                # bytes of the frame ring (0: not recording)
HEADER_WORDS = 64
# The hot side's counters, live, for any reader (status, a metrics exporter): the decoder's counters and messages
# by type, the capture's ring counters and its receive-to-book histogram.  Sizes are the producer's.
COUNTERS = ("cnt", "by_type", "cap", "hist")
STATE_STARTING, STATE_RUNNING, STATE_FINISHED = 0, 1, 2     # H_STATE: FINISHED once every row is published

BBO, TAPE, MESSAGES, PACKETS, GAPS = range(5)
RING_NAMES = ("bbo", "tape", "messages", "packets", "gaps")
WIDTHS = (6, 7, 2 + MSG_SLOT // 8, 6, 3)
N_RINGS = len(WIDTHS)

MAX_CONSUMERS = 7
RING_CTL = 8 * (1 + MAX_CONSUMERS)     # a ring's control block: the producer's line, then one line per consumer
RC_SEQ = 0
CS_CURSOR, CS_LOST, CS_PID, CS_DELIVERED = range(4)      # within a consumer's line (8 words)
CS_OWN = 4                        # words 4-7 of a consumer's line are the consumer's own (e.g. its counters)
FILES_SLOT = 0                    # the output process writing the tables

PUBLISH_CHUNK = 1024              # rows written between two releases of seq (see the module docstring)
MIN_ROWS = 4 * PUBLISH_CHUNK
MIN_FRAME_BYTES = 1 << 20         # the frame ring: at least the largest frame (snaplen) many times over
DEFAULT_FRAME_BYTES = 64 << 20    # about 0.4 s of the sender's top speed here (540k frames/s of ~310 bytes)
DEFAULT_ROWS = {BBO: 1 << 20, TAPE: 1 << 20, MESSAGES: 1 << 20, PACKETS: 1 << 18, GAPS: 1 << 16}

# The hot side's view (``publish``): the control blocks, the rings, and its own bookkeeping (private memory).
Rows = namedtuple("Rows", ["ctl", "bbo", "tape", "msgs", "msg_bytes", "packets", "gaps", "meta"])
RM_ON, RM_GAPS_SENT = range(2)    # meta slots: publishing on; gap rows of out.gaps already published


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def _layout(rows: list[int], counters: list[int], frame_bytes: int = 0) -> tuple[dict, int]:
    """{name: (offset, dtype, shape)} and the total size, for rings of ``rows`` rows each, counter blocks of
    ``counters`` words each and a frame ring of ``frame_bytes``."""
    parts = [("header", np.int64, (HEADER_WORDS,)), ("ctl", np.int64, (N_RINGS * RING_CTL,))]
    parts += [(name, np.int64, (max(words, 1),)) for name, words in zip(COUNTERS, counters)]
    parts += [(RING_NAMES[r], np.int64, (max(rows[r], 1), WIDTHS[r])) for r in range(N_RINGS)]
    parts += [("sym", np.uint8, (LOCATES, 8)), ("sym_set", np.int8, (LOCATES,)),
              ("ln_group", np.int64, (MAX_LINES,)), ("ln_port", np.int64, (MAX_LINES,)),
              ("ln_meta", np.int64, (2,)), ("ss_meta", np.int64, (2,)), ("ss_name", np.uint8, (MAX_SESSIONS, 10))]
    parts += [("fctl", np.int64, (RING_CTL,)), ("frames", np.uint8, (max(frame_bytes, 1),))]
    where, at = {}, 0
    for name, dtype, shape in parts:
        where[name] = (at, dtype, shape)
        at = _align(at + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return where, at


class Region:
    """The shared memory of one capture.  ``create`` (the producer) or ``attach`` (a consumer, from a file
    descriptor of the same memfd); every part is a numpy view of the mapping, named as in the layout."""

    def __init__(self, fd: int, size: int, rows: list[int], counters: list[int], frame_bytes: int = 0):
        self.fd, self.size, self.rows, self.frame_bytes = fd, size, rows, frame_bytes
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        where, _ = _layout(rows, counters, frame_bytes)
        for name, (at, dtype, shape) in where.items():
            setattr(self, name, np.frombuffer(self.map, dtype, int(np.prod(shape)), at).reshape(shape))

    @classmethod
    def create(cls, rows: dict[int, int], counters: dict[str, int] | None = None,
               frame_bytes: int = 0) -> "Region":
        """A new region with ``rows[r]`` rows in ring r (a power of two >= MIN_ROWS, or 0 for off), the counter
        blocks ``counters`` ({name in COUNTERS: words}) and a frame ring of ``frame_bytes`` (a power of two >=
        MIN_FRAME_BYTES, or 0: not recording), every page made resident now so the hot side never takes a
        first-touch fault on it."""
        counts = [int(rows.get(r, 0)) for r in range(N_RINGS)]
        words = [int((counters or {}).get(name, 0)) for name in COUNTERS]
        for r, n in enumerate(counts):
            if n and (n < MIN_ROWS or n & (n - 1)):
                raise ValueError(f"{RING_NAMES[r]} ring: {n} rows is not a power of two >= {MIN_ROWS}")
        if frame_bytes and (frame_bytes < MIN_FRAME_BYTES or frame_bytes & (frame_bytes - 1)):
            raise ValueError(f"frame ring: {frame_bytes} bytes is not a power of two >= {MIN_FRAME_BYTES}")
        _, size = _layout(counts, words, frame_bytes)
        fd = os.memfd_create("appliance-rows", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            region = cls(fd, size, counts, words, frame_bytes)
        except BaseException:
            os.close(fd)
            raise
        flat = np.frombuffer(region.map, np.uint8)
        flat[::PAGE] = 0                                      # a write per page: resident, not the zero page
        h = region.header
        h[H_MAGIC], h[H_VERSION], h[H_BYTES], h[H_PRODUCER_PID] = MAGIC, VERSION, size, os.getpid()
        h[H_ROWS:H_ROWS + N_RINGS] = counts
        h[H_COUNTERS:H_COUNTERS + len(COUNTERS)] = words
        h[H_FRAME_BYTES] = frame_bytes
        region.sym[:] = 32
        return region

    @classmethod
    def attach(cls, fd: int) -> "Region":
        """Map the region behind ``fd`` (a consumer); ValueError if it is not one of ours."""
        size = os.fstat(fd).st_size
        if size < PAGE:
            raise ValueError("not a row region (too small)")
        head = np.frombuffer(os.pread(fd, HEADER_WORDS * 8, 0), np.int64)
        if head[H_MAGIC] != MAGIC or head[H_VERSION] != VERSION or head[H_BYTES] != size:
            raise ValueError("not a row region of this version")
        counts = [int(v) for v in head[H_ROWS:H_ROWS + N_RINGS]]
        words = [int(v) for v in head[H_COUNTERS:H_COUNTERS + len(COUNTERS)]]
        return cls(fd, size, counts, words, int(head[H_FRAME_BYTES]))

    @classmethod
    def open_pid(cls, pid: int, fd: int) -> "Region":
        """Attach to a running capture's region: process ``pid`` holds it as descriptor ``fd`` (``rows_fd`` in
        its ``--ready-file``).  Needs the right to read that process's descriptors (its user, or root)."""
        new = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        try:
            return cls.attach(new)
        except BaseException:
            os.close(new)
            raise

    # -- the producer's state word ------------------------------------------------------------------------
    def set_state(self, state: int) -> None:
        self.header[H_STATE] = state

    @property
    def state(self) -> int:
        return int(self.header[H_STATE])

    def hot_view(self) -> Rows:
        """What ``publish`` takes: the rings, publishing on."""
        msg = self.messages
        return Rows(self.ctl, self.bbo, self.tape, msg, msg.view(np.uint8).reshape(msg.shape[0], -1), self.packets,
                    self.gaps, np.array([1, 0], np.int64))

    def names(self) -> SimpleNamespace:
        """The session layer's names as the sinks read them (``mold``-like)."""
        return SimpleNamespace(ln_group=self.ln_group, ln_port=self.ln_port, ln_meta=self.ln_meta,
                               ss_meta=self.ss_meta, ss_name=self.ss_name)

    def published(self, r: int) -> int:
        return int(self.ctl[r * RING_CTL + RC_SEQ])

    def consumer(self, r: int, slot: int) -> np.ndarray:
        """A consumer's line of ring ``r``'s control block (CS_* words)."""
        at = r * RING_CTL + 8 * (1 + slot)
        return self.ctl[at:at + 8]

    def consumers(self) -> dict[int, dict]:
        """Every slot a consumer ever claimed: its pid (negative once it detached) and, per ring in use, the
        rows it was handed and the rows it lost."""
        out = {}
        for slot in range(MAX_CONSUMERS):
            pid = int(self.consumer(0, slot)[CS_PID])
            if pid == 0:
                continue
            out[slot] = {"pid": abs(pid), "attached": pid > 0,
                         "rings": {RING_NAMES[r]: {"delivered": int(self.consumer(r, slot)[CS_DELIVERED]),
                                                   "lost": int(self.consumer(r, slot)[CS_LOST])}
                                   for r in range(N_RINGS) if self.rows[r]}}
        return out

    def close(self) -> None:
        for name in list(vars(self)):
            if isinstance(getattr(self, name), np.ndarray):
                delattr(self, name)
        try:
            self.map.close()
        except BufferError:
            pass                        # a view is still held somewhere; the mapping goes with the process
        os.close(self.fd)


def rows_off() -> Rows:
    """A placeholder for ring kernels run without a region (tests, ``warm``): publishing off, rows stay in the
    decoder's buffers and are flushed by the driver as before."""
    ctl = np.zeros(N_RINGS * RING_CTL, np.int64)
    one = [np.zeros((1, w), np.int64) for w in WIDTHS]
    return Rows(ctl, one[BBO], one[TAPE], one[MESSAGES], one[MESSAGES].view(np.uint8).reshape(1, -1),
                one[PACKETS], one[GAPS], np.zeros(2, np.int64))


# -- the producer (hot side) ----------------------------------------------------------------------------------
@kernel(inline="always")
def _put(ctl, r, ring, src, first, end):
    """Copy rows ``src[first:end]`` into ring ``r``, releasing ``seq`` every PUBLISH_CHUNK rows."""
    rows = ring.shape[0]
    if end <= first or rows < MIN_ROWS:
        return
    seq = ctl[r * RING_CTL + RC_SEQ]
    mask = rows - 1
    width = ring.shape[1]
    i = first
    while i < end:
        stop = min(end, i + PUBLISH_CHUNK)
        while i < stop:
            slot = seq & mask
            for j in range(width):
                ring[slot, j] = src[i, j]
            seq += 1
            i += 1
        store_release_i64(ctl, r * RING_CTL + RC_SEQ, seq)


@kernel(inline="always")
def _put_messages(ctl, ring, ring_bytes, msgs, meta, end):
    rows = ring.shape[0]
    if end <= 0 or rows < MIN_ROWS:
        return
    seq = ctl[MESSAGES * RING_CTL + RC_SEQ]
    mask = rows - 1
    i = 0
    while i < end:
        stop = min(end, i + PUBLISH_CHUNK)
        while i < stop:
            slot = seq & mask
            ring[slot, 0] = meta[i, 0]
            ring[slot, 1] = meta[i, 1]
            for j in range(MSG_SLOT):
                ring_bytes[slot, 16 + j] = msgs[i, j]
            seq += 1
            i += 1
        store_release_i64(ctl, MESSAGES * RING_CTL + RC_SEQ, seq)


@kernel(inline="always")
def publish(out, rows):
    """Move every finished row out of the decoder's buffers into the rings (gaps are copied and also kept:
    the driver collects them for the summary).  Nothing when publishing is off."""
    meta = rows.meta
    if meta[RM_ON] == 0:
        return
    n = out.n
    ctl = rows.ctl
    if n[N_BBO] > 0:
        _put(ctl, BBO, rows.bbo, out.bbo, 0, n[N_BBO])
        n[N_BBO] = 0
    if n[N_TRADES] > 0:
        _put(ctl, TAPE, rows.tape, out.trades, 0, n[N_TRADES])
        n[N_TRADES] = 0
    if n[N_MSGS] > 0:
        _put_messages(ctl, rows.msgs, rows.msg_bytes, out.msgs, out.msg_meta, n[N_MSGS])
        n[N_MSGS] = 0
    if n[N_PACKETS] > 0:
        _put(ctl, PACKETS, rows.packets, out.packets, 0, n[N_PACKETS])
        n[N_PACKETS] = 0
    if n[N_GAPS] > meta[RM_GAPS_SENT]:
        _put(ctl, GAPS, rows.gaps, out.gaps, meta[RM_GAPS_SENT], n[N_GAPS])
        meta[RM_GAPS_SENT] = n[N_GAPS]


@kernel
def publish_now(out, rows):
    """``publish`` called from Python (the driver's flush at the end, or after a rare full buffer)."""
    publish(out, rows)


class Publisher:
    """The capture decoder's sink: rows the driver flushes (the last ones, or a buffer that filled while the
    ring kernel was not running) go into the rings exactly as ``publish`` sends them from the kernel."""

    def __init__(self, view: Rows, out):
        self.view = view                  # the same view the ring kernel publishes through (one RM_GAPS_SENT)
        self.out = out
        self.dir = None

    def _publish(self, *_args) -> None:
        publish_now(self.out, self.view)

    bbo = trades = messages = packets = _publish     # every row kind leaves ``out`` in the one publish

    def gaps(self, rows, n) -> None:
        """Called before the decoder collects (and clears) its gap rows: publish the new ones, start over."""
        publish_now(self.out, self.view)
        self.view.meta[RM_GAPS_SENT] = 0

    def vwap(self, rows, n, sym, last) -> None:
        pass                              # the consumers fold VWAP windows from the tape

    def close(self) -> None:
        pass


# -- a consumer (cold side) -----------------------------------------------------------------------------------
class Reader:
    """One consumer's cursor over every ring of a region.  ``take(r)`` returns the next rows (a private copy)
    and how many were lost before them; the cursor, the loss and the rows delivered are kept in the consumer's
    slot, where the producer's summary reads them."""

    def __init__(self, region: Region, slot: int | None = None, batch: int = 1 << 16, from_start: bool = True):
        self.region = region
        self.slot = self._claim(slot)
        self.batch = batch
        self.buffers = [np.empty((batch, WIDTHS[r]), np.int64) for r in range(N_RINGS)]
        for r in range(N_RINGS):
            line = region.consumer(r, self.slot)
            line[CS_CURSOR] = 0 if from_start else region.published(r)
            line[CS_LOST] = line[CS_DELIVERED] = 0
            line[CS_PID] = os.getpid()

    def _claim(self, slot: int | None) -> int:
        """``slot``, or the first never-used slot (under a lock on the memfd, so two consumers attaching at once
        do not take the same)."""
        region = self.region
        fcntl.lockf(region.fd, fcntl.LOCK_EX)
        try:
            free = [s for s in range(MAX_CONSUMERS) if region.consumer(0, s)[CS_PID] == 0]
            if slot is None:
                if not free:
                    raise ValueError(f"every one of the {MAX_CONSUMERS} consumer slots is taken")
                slot = free[0]
            for r in range(N_RINGS):
                region.consumer(r, slot)[CS_PID] = os.getpid()
            return slot
        finally:
            fcntl.lockf(region.fd, fcntl.LOCK_UN)

    def take(self, r: int, limit: int | None = None) -> tuple[np.ndarray, int]:
        """(rows, lost): up to ``limit`` (default the batch) rows of ring ``r`` after the cursor, and how many
        rows were overwritten before this consumer could copy them (skipped, counted)."""
        region = self.region
        rows = region.rows[r]
        if rows == 0:
            return self.buffers[r][:0], 0
        line = region.consumer(r, self.slot)
        ring = getattr(region, RING_NAMES[r])
        cur = int(line[CS_CURSOR])
        seq = region.published(r)
        lost = 0
        if seq - cur > rows - PUBLISH_CHUNK:
            lost = seq - cur - (rows - PUBLISH_CHUNK)
            cur += lost
        n = min(seq - cur, limit or self.batch, self.batch)
        buf = self.buffers[r]
        if n > 0:
            start = cur & (rows - 1)
            first = min(n, rows - start)
            buf[:first] = ring[start:start + first]
            buf[first:n] = ring[:n - first]
            intact_from = region.published(r) + PUBLISH_CHUNK - rows     # see the module docstring
            drop = min(max(0, intact_from - cur), n)
            lost += drop
        else:
            n = drop = 0
        line[CS_CURSOR] = cur + n
        line[CS_LOST] += lost
        line[CS_DELIVERED] += n - drop
        return buf[drop:n], lost

    def behind(self, r: int) -> int:
        """Rows published and not yet taken."""
        return self.region.published(r) - int(self.region.consumer(r, self.slot)[CS_CURSOR])

    def detach(self) -> None:
        """Give the slot up; its counts stay for the producer's summary (the pid is kept, negated)."""
        for r in range(N_RINGS):
            line = self.region.consumer(r, self.slot)
            line[CS_PID] = -abs(int(line[CS_PID]))
