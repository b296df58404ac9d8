"""What happens to each frame a ring hands us, whichever ring it came from.

``deliver`` runs the frame through exactly the replay path (``walk.frame``: Ethernet ... MoldUDP64, the books),
publishes the rows it finished into the shared row rings (``cold.rows.publish``: the output process and any
other consumer read them there; the hot side never waits for them), appends the frame to the frame ring when
recording is on (``_record``), and files the receive-to-book latency.  Before taking a frame off its ring, a
ring kernel asks ``room_for_frame``: when a buffer the driver keeps (gaps, broken trades) cannot take one more
worst-case frame, the kernel stops *without* consuming it, the driver empties the buffer, and the frame is taken
on the next call -- so a full output buffer never loses a frame.

The frame ring (``rec``, in the shared region when capturing) is single-producer, single-consumer: ``_record``
writes a pcap record at ``rec_meta[REC_HEAD]`` (wrapping at the end: the recorder writes the ring's bytes in
order, so a record may straddle the wrap) and publishes the new head with a release store, once per frame; the
recorder process frees space by a release store of ``rec_meta[REC_TAIL]`` once its bytes are in the file.  When
the recorder has not freed room for the record, the frame is not recorded and is counted
(``CAP_REC_DROPPED``) -- the receive ring never waits for the disk, and the recording is whole frames with every
missing frame counted.

Capture counters (``cap``) are separate from the decoder's (``cnt``): they describe the rings, not the feed.
The latency histogram is log-linear: exact below 128 ns, then 64 buckets per power of two (<= 1.6% error).

A ring kernel updates the decoder's tables and the capture's own arrays: both travel as one ``RxState``, so a
new piece of capture state is a field here (and in ``new_rx_state``), not a new argument of every kernel.
"""
from collections import namedtuple

import numpy as np

from appliance._jit import kernel
from appliance.cold.rows import publish, rows_off
from appliance.decode.walk import frame, room_for_record
from appliance.pcap import PCAP_INCL_LEN_AT, PCAP_ORIG_LEN_AT, PCAP_RECORD_HEADER, PCAP_TS_FRAC_AT, PCAP_TS_SEC_AT
from appliance.ring.atomics import clock_ns, load_acquire_i64, store_release_i64

# cap[] slots
CAP_FRAMES = 0            # frames taken off the ring(s)
CAP_WAKEUPS = 1           # kernel calls that found the ring empty
CAP_RING_MALFORMED = 2    # descriptors / block headers with offsets or lengths outside the ring (skipped)
CAP_REC_FRAMES = 3        # frames written to the recording buffer
CAP_REC_DROPPED = 4       # frames not recorded: every recording buffer was waiting for the disk
CAP_REC_BYTES = 5
CAP_NO_RX_TS = 6          # frames without a receive timestamp from the kernel / XDP program (no latency sample)
CAP_LAT_MAX = 7           # (gauge) worst receive-to-book latency, ns
CAP_LAT_COUNT = 8         # latency samples
CAP_BLOCKS = 9            # TPACKET_V3 blocks handed to us
CAP_SIZE = 16
CAP_NAMES = {CAP_FRAMES: "ring_frames", CAP_WAKEUPS: "empty_polls", CAP_RING_MALFORMED: "ring_malformed",
             CAP_REC_FRAMES: "recorded_frames", CAP_REC_DROPPED: "recording_dropped_frames",
             CAP_REC_BYTES: "recorded_bytes", CAP_NO_RX_TS: "frames_without_rx_timestamp",
             CAP_LAT_COUNT: "latency_samples", CAP_BLOCKS: "ring_blocks"}

# rec_meta[] slots: the frame ring's control words (``cold.rows.Region.fctl``, or private for a test)
REC_HEAD, REC_ON, REC_SNAPLEN = 0, 1, 2     # the producer's cache line: bytes ever appended (released), on, snaplen
REC_TAIL = 8                  # the recorder's line: bytes ever written out (released by the recorder)
REC_META_SIZE = 16
REC_OFF, REC_RECORDING = 0, 1     # REC_ON values
REC_HEADER = PCAP_RECORD_HEADER     # classic pcap record header: ts_sec, ts_nsec, incl_len, orig_len (little-endian)

HIST_SIZE = 4096
SUB_BITS = 6              # 64 sub-buckets per power of two

# status returned by the ring kernels
IDLE, BUDGET, OUT_FULL = 0, 1, 2


RxState = namedtuple("RxState", [
    "dec",          # decode.state.Decode: the decoder's tables
    "cap",          # int64[CAP_SIZE]: capture counters, CAP_* slots
    "hist",         # int64[HIST_SIZE]: receive-to-book latency histogram (``_bucket``)
    "rec",          # uint8[2**k]: the frame ring (a 1-byte placeholder when not recording)
    "rec_meta",     # int64[>= REC_META_SIZE]: REC_* words of ``rec``
    "ts",           # int64[2]: timespec scratch for clock_ns
    "rows",         # cold.rows.Rows: the shared row rings each frame's finished rows are published into
])


def new_rx_state(dec, rows=None, cap=None, hist=None) -> RxState:
    """Fresh capture state around the decoder's tables ``dec``; recording off; ``rows`` the shared rings
    (``Region.hot_view()``), or None: rows stay in the decoder's buffers for the driver to flush; ``cap`` and
    ``hist`` arrays to count in (the region's, so other processes read them live), or None: new ones."""
    cap = cap if cap is not None else np.zeros(CAP_SIZE, np.int64)
    hist = hist if hist is not None else np.zeros(HIST_SIZE, np.int64)
    return RxState(dec, cap, hist, np.zeros(1, np.uint8), np.zeros(REC_META_SIZE, np.int64), np.zeros(2, np.int64),
                   rows if rows is not None else rows_off())


def recording_on(state: RxState, ring: np.ndarray, meta: np.ndarray, snaplen: int) -> RxState:
    """``state`` recording into the frame ring ``ring`` (uint8, a power of two bytes) with control words ``meta``
    (the region's ``fctl``, or a private int64[REC_META_SIZE] for a test: then nothing frees room, so the ring
    holds the first ``len(ring)`` bytes of records and the rest are counted as not recorded)."""
    if len(ring) & (len(ring) - 1) or len(meta) < REC_META_SIZE:
        raise ValueError("the frame ring must be a power of two bytes with REC_META_SIZE control words")
    meta[REC_SNAPLEN] = snaplen
    meta[REC_ON] = REC_RECORDING
    return state._replace(rec=ring, rec_meta=meta)


def recorded_bytes(state: RxState) -> np.ndarray:
    """The records a private frame ring holds (nothing freed room, so they start at 0 and did not wrap)."""
    head, tail = int(state.rec_meta[REC_HEAD]), int(state.rec_meta[REC_TAIL])
    if tail != 0 or head > len(state.rec):
        raise ValueError("the frame ring wrapped or was drained: read it with cold.recording")
    return state.rec[:head]


@kernel(inline="always")
def _bucket(ns):
    if ns < (2 << SUB_BITS):
        return ns
    e = 0
    v = ns >> (SUB_BITS + 1)
    while v != 0:
        v >>= 1
        e += 1
    i = (e << SUB_BITS) + (ns >> e)
    return i if i < HIST_SIZE else HIST_SIZE - 1


def bucket_floor(i: int) -> int:
    """Smallest latency (ns) that falls in bucket ``i`` (the inverse of ``_bucket``)."""
    if i < (2 << SUB_BITS):
        return i
    e = (i >> SUB_BITS) - 1
    return (i - (e << SUB_BITS)) << e


@kernel(inline="always")
def room_for_frame(caplen, state):
    """0 when the buffers the driver keeps can take this frame's rows, else OUT_FULL.  (The frame ring never
    holds a frame back: a frame it has no room for is counted as not recorded.)"""
    return 0 if room_for_record(state.dec) else OUT_FULL


@kernel(inline="always")
def _ring_le32(rec, mask, at, value):
    for k in range(4):
        rec[(at + k) & mask] = (value >> (8 * k)) & 0xFF


@kernel(inline="always")
def _ring_copy(rec, mask, at, src, start, n):
    """src[start:start+n] into the ring at byte ``at`` (mod its size): one or two block copies."""
    if n <= 0:
        return
    p = at & mask
    first = min(n, mask + 1 - p)
    for i in range(first):                # plain loops: slices would need numba's runtime, which is off
        rec[p + i] = src[start + i]
    for i in range(first, n):
        rec[i - first] = src[start + i]


@kernel(inline="always")
def _record(buf, off, caplen, wirelen, real_ns, vlan_tag, state):
    """Append the frame to the frame ring as a pcap record, or count it as not recorded when the recorder has not
    freed room for it; ``vlan_tag`` >= 0 is a tag the kernel took out of the frame (tpid << 16 | tci), put back
    after the MAC addresses as tcpdump does."""
    rec, rec_meta, cap = state.rec, state.rec_meta, state.cap
    extra = 4 if vlan_tag >= 0 and caplen >= 12 else 0
    incl = min(caplen + extra, rec_meta[REC_SNAPLEN])
    head = rec_meta[REC_HEAD]
    if head + REC_HEADER + incl - load_acquire_i64(rec_meta, REC_TAIL) > len(rec):
        cap[CAP_REC_DROPPED] += 1
        return
    mask = len(rec) - 1
    _ring_le32(rec, mask, head + PCAP_TS_SEC_AT, real_ns // 1_000_000_000)
    _ring_le32(rec, mask, head + PCAP_TS_FRAC_AT, real_ns % 1_000_000_000)
    _ring_le32(rec, mask, head + PCAP_INCL_LEN_AT, incl)
    _ring_le32(rec, mask, head + PCAP_ORIG_LEN_AT, wirelen + extra)
    q = head + REC_HEADER
    if extra == 0:
        _ring_copy(rec, mask, q, buf, off, incl)
    else:
        head12 = min(12, incl)
        _ring_copy(rec, mask, q, buf, off, head12)
        for k in range(4):
            if 12 + k < incl:
                rec[(q + 12 + k) & mask] = (vlan_tag >> (24 - 8 * k)) & 0xFF
        _ring_copy(rec, mask, q + 16, buf, off + 12, incl - 16)
    store_release_i64(rec_meta, REC_HEAD, q + incl)
    cap[CAP_REC_FRAMES] += 1
    cap[CAP_REC_BYTES] += REC_HEADER + incl


@kernel(inline="always")
def deliver(buf, off, caplen, wirelen, rx_ns, clock_id, real_ns, vlan_tag, state):
    """Record, decode and time one frame.  ``rx_ns`` is the receive stamp on ``clock_id`` (0: none),
    ``real_ns`` the wall-clock stamp written with the recording and used as the frame's capture time."""
    cap, rec_meta = state.cap, state.rec_meta
    cap[CAP_FRAMES] += 1
    if rec_meta[REC_ON] == REC_RECORDING:
        _record(buf, off, caplen, wirelen, real_ns, vlan_tag, state)
    frame(buf, off, caplen, wirelen, real_ns, state.dec)
    publish(state.dec.out, state.rows)
    if rx_ns == 0:
        cap[CAP_NO_RX_TS] += 1
        return
    lat = clock_ns(clock_id, state.ts) - rx_ns
    if lat < 0:
        lat = 0
    state.hist[_bucket(lat)] += 1
    cap[CAP_LAT_COUNT] += 1
    if lat > cap[CAP_LAT_MAX]:
        cap[CAP_LAT_MAX] = lat
