"""Record walkers: the kernels that step through a mapped file (or a chunk of one) record by record.

Each walker takes the buffer and a start offset and returns ``(offset, status)``:

* ``NEED_MORE`` -- every complete record before ``offset`` was processed; the rest is an incomplete record
  (the driver appends the next chunk of a gzip stream and calls again; with ``final`` set an incomplete
  record is counted as ``truncated_records`` and the walk ends);
* ``OUT_FULL`` -- stopped at a record boundary because an output buffer could not take a worst-case record;
  the driver writes the rows out and calls again from ``offset``;
* ``CORRUPT`` -- the file's own framing is broken at ``offset`` (a record length no capture can have): nothing
  after it can be trusted; what was decoded before it stands.
* ``LOST`` -- (day files) the length prefix at ``offset`` is damaged; the driver finds the next record boundary
  with ``resync_dayfile`` and calls again from there (see ``walk_dayfile``).

Live rings (TPACKET_V3 blocks, AF_XDP descriptors) hand their frames to the same ``frame`` function.  Every
walker takes the decoder's tables as one ``state.Decode`` (``dec``).
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode import counters as C
from appliance.decode.book import apply_message, copy_out, warm_far, warm_near
from appliance.decode.frames import feed_payload
from appliance.decode.mold import COUNT_AT, HEADER, SEQUENCE_AT, free_rows, handle_packet, has_room, \
    settle
from appliance.decode.offsets import MSG_LENGTH
from appliance.decode.state import FLAG_MESSAGES, FLAG_PACKETS, N_PACKETS, PKT_COUNT, PKT_FRAME, PKT_LINE, \
    PKT_SEQUENCE, PKT_SESSION, PKT_STATUS, ROW_MARGIN, SS_RESOLVE
from appliance.decode.wire import be16, be64u, rd16, rd32
from appliance.pcap import EPB_CAPTURED_LEN_AT, EPB_INTERFACE_ID_AT, EPB_ORIGINAL_LEN_AT, EPB_TS_HIGH_AT, \
    EPB_TS_LOW_AT, IDB_LINKTYPE_AT, IDB_SNAPLEN_AT, IF_TSRESOL, LINKTYPE_ETHERNET, MAX_SNAPLEN, OPT_ENDOFOPT, \
    PCAP_INCL_LEN_AT, PCAP_ORIG_LEN_AT, PCAP_RECORD_HEADER, PCAP_TS_FRAC_AT, PCAP_TS_SEC_AT, PCAPNG_BLOCK_MIN, \
    PCAPNG_BLOCK_TAIL, PCAPNG_BYTE_ORDER_MAGIC, PCAPNG_BYTE_ORDER_MAGIC_SWAPPED, PCAPNG_EPB, PCAPNG_EPB_HEAD, \
    PCAPNG_IDB, PCAPNG_IDB_HEAD, PCAPNG_SHB, PCAPNG_SPB, PCAPNG_SPB_HEAD, PCAPNG_TOTAL_LENGTH_AT, \
    SHB_BYTE_ORDER_MAGIC_AT, SPB_ORIGINAL_LEN_AT

NEED_MORE, OUT_FULL, CORRUPT, LOST = 0, 1, 2, 3
WARM_FAR, WARM_NEAR = 16, 6      # look-ahead distances, in records, of the two prefetch stages
MAX_RECORD = MAX_SNAPLEN      # no capture tool writes a larger record
# Day-file messages that must frame (length == the ITCH length of their type) before a record boundary is
# trusted: after a bad record, and where resynchronisation resumes (``_frames_from``).  A random offset frames
# as a message with odds of roughly 1 in 10,000 in ITCH data (a zero high byte, then the one length of the next
# byte's type), so four are a false boundary about once in 10**14 offsets.
SYNC_RECORDS = 4
FRAMES_NO, FRAMES_YES, FRAMES_MORE = 0, 1, 2
WAIT, SKIP, BROKEN = 0, 1, 2      # _judge's verdicts on a record that is not a whole, sound message

MAX_IFACES = 64
NG_BIG, NG_NIFACES, NG_IFACES = 0, 1, 2   # ng[] slots: byte order, interface count, then per interface:
NG_IFACE_SLOTS = 3                        # link type, if_tsresol, snap length
NG_SIZE = NG_IFACES + NG_IFACE_SLOTS * MAX_IFACES


@kernel
def frame(buf, off, caplen, wirelen, ts_ns, dec):
    """One captured Ethernet frame (``wirelen`` bytes on the wire, ``caplen`` of them captured): find the feed
    datagram, run the session layer and the books."""
    mold, bk, out, cnt, by_type = dec
    cnt[C.FRAMES] += 1
    p, n, line = feed_payload(buf, off, caplen, wirelen, mold, cnt)
    if line < 0:
        return
    mold.ln_packets[line] += 1
    if ts_ns != 0:                       # a pcapng simple packet block has no timestamp
        if cnt[C.FIRST_FRAME_NS] == 0:
            cnt[C.FIRST_FRAME_NS] = ts_ns
        cnt[C.LAST_FRAME_NS] = ts_ns
    status, sess = handle_packet(buf, p, n, line, mold, bk, out, cnt, by_type)
    if out.n[FLAG_PACKETS] != 0:
        r = out.n[N_PACKETS]
        out.packets[r, PKT_FRAME] = cnt[C.FRAMES]
        out.packets[r, PKT_LINE] = line
        out.packets[r, PKT_SESSION] = sess
        out.packets[r, PKT_SEQUENCE] = np.int64(be64u(buf, p + SEQUENCE_AT)) if n >= HEADER else -1
        out.packets[r, PKT_COUNT] = be16(buf, p + COUNT_AT) if n >= HEADER else -1
        out.packets[r, PKT_STATUS] = status
        out.n[N_PACKETS] = r + 1
    if mold.ss_meta[SS_RESOLVE] != 0:
        settle(mold, False, bk, out, cnt, by_type)


@kernel(inline="always")
def room_for_record(dec):
    """Room for one more worst-case record, after releasing whatever held packets can now go."""
    mold, bk, out, cnt, by_type = dec
    if mold.ss_meta[SS_RESOLVE] != 0 and not settle(mold, False, bk, out, cnt, by_type):
        return False
    return has_room(out, ROW_MARGIN)


@kernel
def walk_pcap(buf, pos, end, big, nano, linktype, final, dec):
    """Classic pcap records from ``pos`` (past the 24-byte file header)."""
    cnt = dec.cnt
    frac_scale = 1 if nano else 1000
    while pos < end:
        if not room_for_record(dec):
            return pos, OUT_FULL
        if pos + PCAP_RECORD_HEADER > end:
            break
        incl = rd32(buf, pos + PCAP_INCL_LEN_AT, big)
        if incl > MAX_RECORD:
            return pos, CORRUPT
        if pos + PCAP_RECORD_HEADER + incl > end:
            break
        if linktype != LINKTYPE_ETHERNET:
            cnt[C.FRAMES] += 1
            cnt[C.UNSUPPORTED_LINKTYPE] += 1
        else:
            ts = (rd32(buf, pos + PCAP_TS_SEC_AT, big) * 1_000_000_000
                  + rd32(buf, pos + PCAP_TS_FRAC_AT, big) * frac_scale)
            frame(buf, pos + PCAP_RECORD_HEADER, incl, rd32(buf, pos + PCAP_ORIG_LEN_AT, big), ts, dec)
        pos += PCAP_RECORD_HEADER + incl
    if pos < end and final:
        cnt[C.TRUNCATED_RECORDS] += 1
        return end, NEED_MORE
    return pos, NEED_MORE


@kernel(inline="always")
def _to_ns(ts, resol):
    """pcapng timestamp units (if_tsresol: 10**-n, or 2**-n with the high bit set) to nanoseconds."""
    if resol & 0x80:
        shift = np.int64(resol & 0x7F)
        if shift > 62:
            return 0
        whole = ts >> shift
        part = ts & ((np.int64(1) << shift) - 1)
        return whole * 1_000_000_000 + ((part * 1_000_000_000) >> shift) if shift <= 32 \
            else whole * 1_000_000_000 + np.int64((part / np.float64(np.int64(1) << shift)) * 1e9)
    if resol <= 9:
        scale = 1
        for _ in range(9 - resol):
            scale *= 10
        return ts * scale
    div = 1
    for _ in range(min(resol, 27) - 9):
        div *= 10
    return ts // div


@kernel
def _idb(buf, pos, total, big, ng):
    n = ng[NG_NIFACES]
    if n >= MAX_IFACES:
        return
    resol = 6
    q = pos + PCAPNG_IDB_HEAD
    stop = pos + total - PCAPNG_BLOCK_TAIL
    while q + 4 <= stop:
        code = rd16(buf, q, big)
        olen = rd16(buf, q + 2, big)
        if code == OPT_ENDOFOPT or q + 4 + olen > stop:
            break
        if code == IF_TSRESOL and olen >= 1:
            resol = np.int64(buf[q + 4])
        q += 4 + ((olen + 3) & ~3)
    base = NG_IFACES + NG_IFACE_SLOTS * n
    ng[base] = rd16(buf, pos + IDB_LINKTYPE_AT, big)
    ng[base + 1] = resol
    ng[base + 2] = rd32(buf, pos + IDB_SNAPLEN_AT, big)
    ng[NG_NIFACES] = n + 1


@kernel
def walk_pcapng(buf, pos, end, ng, final, dec):
    """pcapng blocks from ``pos``; ``ng`` carries byte order and interfaces across calls and sections."""
    cnt = dec.cnt
    while pos < end:
        if not room_for_record(dec):
            return pos, OUT_FULL
        if pos + PCAPNG_BLOCK_MIN > end:
            break
        if rd32(buf, pos, False) == PCAPNG_SHB:
            bom = rd32(buf, pos + SHB_BYTE_ORDER_MAGIC_AT, False)
            if bom == PCAPNG_BYTE_ORDER_MAGIC:
                ng[NG_BIG] = 0
            elif bom == PCAPNG_BYTE_ORDER_MAGIC_SWAPPED:
                ng[NG_BIG] = 1
            else:
                return pos, CORRUPT
            ng[NG_NIFACES] = 0
        big = ng[NG_BIG] != 0
        btype = rd32(buf, pos, big)
        total = rd32(buf, pos + PCAPNG_TOTAL_LENGTH_AT, big)
        if total < PCAPNG_BLOCK_MIN or total % 4 != 0 or total > MAX_RECORD + 64:
            return pos, CORRUPT
        if pos + total > end:
            break
        if btype == PCAPNG_IDB and total >= PCAPNG_IDB_HEAD + PCAPNG_BLOCK_TAIL:
            _idb(buf, pos, total, big, ng)
        elif btype == PCAPNG_EPB and total >= PCAPNG_EPB_HEAD + PCAPNG_BLOCK_TAIL:
            iface = rd32(buf, pos + EPB_INTERFACE_ID_AT, big)
            caplen = rd32(buf, pos + EPB_CAPTURED_LEN_AT, big)
            cnt_frame = iface < ng[NG_NIFACES] and PCAPNG_EPB_HEAD + caplen <= total - PCAPNG_BLOCK_TAIL
            if not cnt_frame:
                cnt[C.FRAMES] += 1
                cnt[C.TRUNCATED_FRAMES] += 1
            elif ng[NG_IFACES + NG_IFACE_SLOTS * iface] != LINKTYPE_ETHERNET:
                cnt[C.FRAMES] += 1
                cnt[C.UNSUPPORTED_LINKTYPE] += 1
            else:
                ts = (rd32(buf, pos + EPB_TS_HIGH_AT, big) << 32) | rd32(buf, pos + EPB_TS_LOW_AT, big)
                frame(buf, pos + PCAPNG_EPB_HEAD, caplen, rd32(buf, pos + EPB_ORIGINAL_LEN_AT, big),
                      _to_ns(ts, ng[NG_IFACES + NG_IFACE_SLOTS * iface + 1]), dec)
        elif btype == PCAPNG_SPB and total >= PCAPNG_SPB_HEAD + PCAPNG_BLOCK_TAIL:
            if ng[NG_NIFACES] == 0 or ng[NG_IFACES] != LINKTYPE_ETHERNET:
                cnt[C.FRAMES] += 1
                cnt[C.UNSUPPORTED_LINKTYPE] += 1
            else:
                # An SPB holds min(original length, snap length) bytes, padded to 4 (pcapng 4.4).
                origlen = rd32(buf, pos + SPB_ORIGINAL_LEN_AT, big)
                caplen = min(origlen, total - PCAPNG_SPB_HEAD - PCAPNG_BLOCK_TAIL)
                snap = ng[NG_IFACES + 2]
                if snap > 0 and snap < caplen:
                    caplen = snap
                frame(buf, pos + PCAPNG_SPB_HEAD, caplen, origlen, 0, dec)
        pos += total
    if pos < end and final:
        cnt[C.TRUNCATED_RECORDS] += 1
        return end, NEED_MORE
    return pos, NEED_MORE


@kernel(inline="always")
def _next_record(buf, q, end):
    """Offset of the record after the one at ``q``, or -1 when the one at ``q`` is not whole."""
    if q < 0 or q + 2 > end:
        return -1
    nxt = q + 2 + be16(buf, q)
    return nxt if nxt <= end else -1


@kernel
def walk_dayfile(buf, pos, end, final, dec):
    """NASDAQ binary day file: ``[u16 big-endian length][message]`` repeated, applied in order.

    A record whose length is not its type's (zero-length ones included) is skipped and counted when the
    ``SYNC_RECORDS`` records after it frame: its own length was sound, only its content was bad.  Otherwise its
    length prefix is damaged and nothing after it lines up: the walk stops there with ``LOST`` and the driver
    resynchronises with ``resync_dayfile``.  The good path pays nothing for this: the test that sends a record
    to ``_judge`` is the one that was there before.

    Two look-ahead cursors run ``WARM_FAR`` and ``WARM_NEAR`` records ahead of the one being applied and
    prefetch what it will touch (book.warm_far / warm_near): replay is bound by memory latency, not work.
    """
    bk, out, cnt, by_type = dec.book, dec.out, dec.cnt, dec.by_type
    copy = out.n[FLAG_MESSAGES] != 0
    budget = 0
    far = pos
    for _ in range(WARM_FAR):
        far = _next_record(buf, far, end)
    near = pos
    for _ in range(WARM_NEAR):
        near = _next_record(buf, near, end)
    while pos < end:
        if budget == 0:
            # One message adds at most two rows to a buffer (a trade and a feed-clock mark to the tape).
            budget = free_rows(out) // 2
            if budget == 0:
                return pos, OUT_FULL
        budget -= 1
        nf = _next_record(buf, far, end)
        if nf >= 0:
            if _record_ok(buf, far):
                warm_far(buf, far + 2, bk)
            far = nf
        nn = _next_record(buf, near, end)
        if nn >= 0:
            if _record_ok(buf, near):
                warm_near(buf, near + 2, bk)
            near = nn
        if pos + 2 > end:
            break
        mlen = be16(buf, pos)
        p = pos + 2
        if mlen == 0 or p + mlen > end or np.int64(MSG_LENGTH[buf[p]]) != mlen:
            verdict = _judge(buf, pos, end, final)
            if verdict == WAIT:
                break
            if verdict == BROKEN:
                cnt[C.FRAMING_LOST] += 1
                return pos, LOST
            cnt[C.BAD_MESSAGES] += 1
            if mlen == 0:
                cnt[C.EMPTY_RECORDS] += 1
            pos = p + mlen
            continue
        pos = p + mlen
        apply_message(buf, p, bk, out, cnt, by_type)
        if copy:
            copy_out(out, buf, p, mlen, -1, cnt[C.MESSAGES] + cnt[C.BAD_MESSAGES])
    if pos < end and final:
        cnt[C.TRUNCATED_RECORDS] += 1
        return end, NEED_MORE
    return pos, NEED_MORE


@kernel
def _frames_from(buf, q, end, final, need, after_bad):
    """Whether records from ``q`` frame until ``need`` messages have (``FRAMES_YES`` / ``FRAMES_NO``), or
    ``FRAMES_MORE`` when the buffer ends first.  A bad record is allowed only after a message that framed, never
    after another bad one (nor first, with ``after_bad``): a sound length brings the next record into line, a
    damaged one almost never does.  Zero-length records (padding some tools write) are stepped over, at most
    ``need`` of them.  At the end of the input, running out is a yes: what is left is judged when walked."""
    framed = 0
    empty = 0
    while framed < need:
        if q + 2 > end:
            return FRAMES_YES if final else FRAMES_MORE
        mlen = be16(buf, q)
        if mlen == 0:
            empty += 1
            if empty > need:
                return FRAMES_NO
            q += 2
            continue
        if q + 2 + mlen > end:
            return FRAMES_YES if final else FRAMES_MORE
        if np.int64(MSG_LENGTH[buf[q + 2]]) == mlen:
            framed += 1
            after_bad = False
        elif after_bad:
            return FRAMES_NO
        else:
            after_bad = True
        q += 2 + mlen
    return FRAMES_YES


@kernel
def _boundary(buf, q, end, final):
    """First offset from ``q`` where a message record and the ``SYNC_RECORDS - 1`` after it frame, and whether
    one was found; if not, the offset from which the search must go on once more bytes are there (``end`` at
    the end of the input).  Linear in the bytes searched: most offsets fail on their first two bytes."""
    while q + 3 <= end:
        mlen = be16(buf, q)
        if mlen != 0 and np.int64(MSG_LENGTH[buf[q + 2]]) == mlen:
            if q + 2 + mlen <= end:
                verdict = _frames_from(buf, q + 2 + mlen, end, final, SYNC_RECORDS - 1, False)
                if verdict == FRAMES_YES:
                    return q, True
                if verdict == FRAMES_MORE:
                    return q, False
            elif not final:
                return q, False
        q += 1
    return (end, False) if final else (q, False)


@kernel
def resync_dayfile(buf, pos, end, final, cnt):
    """After ``LOST`` at ``pos``: ``(offset, found)`` as ``_boundary``; the bytes passed over are counted."""
    q, found = _boundary(buf, pos, end, final)
    cnt[C.RESYNC_SKIPPED_BYTES] += q - pos
    return q, found


@kernel
def _judge(buf, pos, end, final):
    """The record at ``pos`` is not a whole, sound message: ``WAIT`` for more bytes (at the end of the input:
    it is cut short), ``SKIP`` it (its length is sound: the records after it frame), or ``BROKEN`` (its length
    prefix is damaged)."""
    mlen = be16(buf, pos)
    p = pos + 2
    if mlen != 0 and (p >= end or np.int64(MSG_LENGTH[buf[p]]) == mlen):
        return WAIT                      # a sound record this buffer does not hold whole
    if p + mlen > end:
        if not final:
            return WAIT
        # A bad record running past the end of the input is a cut record, unless a record boundary follows
        # inside it: then its length was damaged.
        _q, found = _boundary(buf, pos + 1, end, True)
        return BROKEN if found else WAIT
    verdict = _frames_from(buf, p + mlen, end, final, SYNC_RECORDS, True)
    if verdict == FRAMES_YES:
        return SKIP
    return WAIT if verdict == FRAMES_MORE else BROKEN


@kernel(inline="always")
def _record_ok(buf, q):
    """The (whole) record at ``q`` holds a message of its type's length, so its fields may be read."""
    mlen = be16(buf, q)
    return mlen > 0 and np.int64(MSG_LENGTH[buf[q + 2]]) == mlen


@kernel
def finish(dec):
    """End of all input: give up on every hole still waiting; False if stopped for output room."""
    return settle(dec.mold, True, dec.book, dec.out, dec.cnt, dec.by_type)
