"""MoldUDP64 sessions: validation, sequencing, gap detection and A/B line arbitration.

Per session the kernel keeps the next expected sequence number, and per (session, line) the next sequence
number that line will send.  First copy wins: a packet whose messages were all applied before is a duplicate;
one that overlaps applies only its new messages.  A packet that arrives ahead of ``next`` is held (copied into
a pending slot, since a live ring recycles its frame) while another line carrying the session might still
fill the hole.  The hole becomes a gap only once every line carrying the session has moved past it
(``horizon``), or when the pending table is full, or at the end of input.  With one line that is immediate.

A packet whose framing is invalid -- count disagreeing with the bytes, a block length that does not match its
ITCH type, an unknown type, a truncated block -- is counted and none of its messages are applied; it is
treated as never received, so the other line (or a gap) accounts for its sequence numbers.
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode import counters as C
from appliance.decode.book import apply_message, copy_out, warm_far, warm_near
from appliance.decode.offsets import MSG_LENGTH
from appliance.decode.state import FLAG_MESSAGES, FLAG_PACKETS, GAP_FIRST, GAP_LAST, GAP_SESSION, LN_COUNT, \
    MAX_PENDING, MAX_SESSIONS, N_BBO, N_BROKEN, N_GAPS, N_MSGS, N_PACKETS, N_TRADES, PENDING_SLOT, ROW_MARGIN, \
    SS_COUNT, SS_RESOLVE
from appliance.decode.wire import be16, be64u

HEADER = 20                  # session 10, sequence 8, count 2
SESSION_AT, SEQUENCE_AT, COUNT_AT = 0, 10, 18
HEARTBEAT = 0
END_OF_SESSION = 0xFFFF
MAX_SEQUENCE = 1 << 62
WARM_AHEAD = 4               # blocks between book.warm_near and applying that block
# What became of a packet (packets.csv "status"); HELD packets are applied later, when their turn comes.
PACKET_APPLIED, PACKET_DUPLICATE, PACKET_HELD, PACKET_BAD, PACKET_HEARTBEAT, PACKET_END_OF_SESSION, \
    PACKET_DROPPED = range(7)
PACKET_STATUS = ("applied", "duplicate", "held", "bad", "heartbeat", "end_of_session", "dropped")


@kernel(inline="always")
def _session_of(mold, buf, p, cnt):
    n = mold.ss_meta[SS_COUNT]
    names = mold.ss_name
    for s in range(n):
        same = True
        for i in range(10):
            if names[s, i] != buf[p + i]:
                same = False
                break
        if same:
            return s
    if n == MAX_SESSIONS:
        cnt[C.SESSIONS_OVERFLOW] += 1
        return -1
    for i in range(10):
        names[n, i] = buf[p + i]
    mold.ss_meta[SS_COUNT] = n + 1
    return n


@kernel(inline="always")
def _valid_blocks(buf, p, n, count, cnt, bk):
    """True when exactly ``count`` well-formed message blocks fill the packet after its header.

    Each well-formed block also starts the loads its message will need (book.warm_far), so by the time the
    packet is applied its orders and book sides are on their way into cache.
    """
    q = p + HEADER
    end = p + n
    for _ in range(count):
        if q + 2 > end:
            cnt[C.BAD_FRAMING] += 1
            return False
        mlen = be16(buf, q)
        if mlen == 0:
            cnt[C.BAD_LENGTH] += 1
            return False
        if q + 2 + mlen > end:
            cnt[C.BAD_FRAMING] += 1
            return False
        expected = np.int64(MSG_LENGTH[buf[q + 2]])
        if expected == 0:
            cnt[C.BAD_TYPE] += 1
            return False
        if expected != mlen:
            cnt[C.BAD_LENGTH] += 1
            return False
        warm_far(buf, q + 2, bk)
        q += 2 + mlen
    if q != end:
        cnt[C.BAD_FRAMING] += 1
        return False
    return True


@kernel
def apply_blocks(buf, p, count, skip, sess, seq, bk, out, cnt, by_type):
    """Apply blocks ``skip..count-1`` of a validated packet whose first block is at ``buf[p]``."""
    copy = out.n[FLAG_MESSAGES] != 0
    near = p
    for _ in range(min(WARM_AHEAD, count)):
        near += 2 + be16(buf, near)
    for i in range(count):
        mlen = be16(buf, p)
        if i + WARM_AHEAD < count:
            warm_near(buf, near + 2, bk)          # blocks were validated: lengths and types are sound
            near += 2 + be16(buf, near)
        if i >= skip:
            apply_message(buf, p + 2, bk, out, cnt, by_type)
            if copy:
                copy_out(out, buf, p + 2, mlen, sess, seq + i)
        p += 2 + mlen


@kernel(inline="always")
def _gap(mold, out, s, first, last):
    r = out.n[N_GAPS]
    out.gaps[r, GAP_SESSION] = s
    out.gaps[r, GAP_FIRST] = first
    out.gaps[r, GAP_LAST] = last
    out.n[N_GAPS] = r + 1
    mold.ss_next[s] = last + 1


@kernel(inline="always")
def _horizon(mold, s):
    """Smallest next-sequence over the lines that have carried session ``s`` (0 if none)."""
    h = 0
    for m in range(mold.ln_meta[LN_COUNT]):
        v = mold.ss_line_next[s, m]
        if v > 0 and (h == 0 or v < h):
            h = v
    return h


@kernel(inline="always")
def _oldest_pending(mold, s, cnt):
    if cnt[C.PENDING] == 0:
        return -1
    best = -1
    for i in range(MAX_PENDING):
        if mold.pd_used[i] != 0 and mold.pd_sess[i] == s and (best < 0 or mold.pd_seq[i] < mold.pd_seq[best]):
            best = i
    return best


@kernel
def resolve_step(mold, s, force, bk, out, cnt, by_type):
    """Make one step of progress on session ``s``: release a held packet or declare a hole lost.

    ``force`` declares the hole before the oldest held packet even if a line might still fill it (pending
    table full, or end of input).  Returns True when something happened.
    """
    nxt = mold.ss_next[s]
    i = _oldest_pending(mold, s, cnt)
    if i >= 0 and mold.pd_seq[i] <= nxt:
        seq = mold.pd_seq[i]
        count = mold.pd_count[i]
        if seq + count <= nxt:
            cnt[C.DUPLICATE_PACKETS] += 1
        else:
            apply_blocks(mold.stash, i * PENDING_SLOT + HEADER, count, nxt - seq, s, seq, bk, out, cnt, by_type)
            mold.ss_next[s] = seq + count
        mold.pd_used[i] = 0
        cnt[C.PENDING] -= 1
        return True
    horizon = _horizon(mold, s)
    if horizon > nxt:
        end = horizon if i < 0 or horizon < mold.pd_seq[i] else mold.pd_seq[i]
        _gap(mold, out, s, nxt, end - 1)
        return True
    if force and i >= 0:
        _gap(mold, out, s, nxt, mold.pd_seq[i] - 1)
        return True
    if force:
        # End of input with nothing held: whatever any line announced beyond ``next`` never arrived.
        sent = 0
        for m in range(mold.ln_meta[LN_COUNT]):
            sent = max(sent, mold.ss_line_next[s, m])
        if sent > nxt:
            _gap(mold, out, s, nxt, sent - 1)
            return True
    return False


@kernel(inline="always")
def _hold(mold, buf, p, n, s, seq, count, cnt):
    """Copy an early packet into a free pending slot; False when none is free or it does not fit."""
    if n > PENDING_SLOT or cnt[C.PENDING] == MAX_PENDING:
        return False
    for i in range(MAX_PENDING):
        if mold.pd_used[i] == 0:
            base = i * PENDING_SLOT
            for k in range(n):
                mold.stash[base + k] = buf[p + k]
            mold.pd_used[i] = 1
            mold.pd_sess[i] = s
            mold.pd_seq[i] = seq
            mold.pd_count[i] = count
            cnt[C.PENDING] += 1
            return True
    return False


@kernel
def handle_packet(buf, p, n, line, mold, bk, out, cnt, by_type):
    """One MoldUDP64 packet (the UDP payload at ``buf[p:p+n]``) received on ``line``.

    Returns (status, session index); status is one of the PACKET_* codes (packets.csv's ``status``).
    """
    cnt[C.PACKETS] += 1
    if n < HEADER:
        cnt[C.BAD_PACKETS] += 1
        cnt[C.BAD_SHORT] += 1
        return PACKET_BAD, -1
    seq_u = be64u(buf, p + SEQUENCE_AT)
    count = be16(buf, p + COUNT_AT)
    if seq_u >= np.uint64(MAX_SEQUENCE):
        cnt[C.BAD_PACKETS] += 1
        cnt[C.BAD_SEQUENCE] += 1
        return PACKET_BAD, -1
    seq = np.int64(seq_u)
    control = count == HEARTBEAT or count == END_OF_SESSION
    if control:
        if n != HEADER:
            cnt[C.BAD_PACKETS] += 1
            cnt[C.BAD_FRAMING] += 1
            return PACKET_BAD, -1
    elif not _valid_blocks(buf, p, n, count, cnt, bk):
        cnt[C.BAD_PACKETS] += 1
        return PACKET_BAD, -1
    s = _session_of(mold, buf, p, cnt)
    if s < 0:
        return PACKET_DROPPED, -1
    if mold.ss_first[s] < 0:
        mold.ss_next[s] = seq
        mold.ss_first[s] = seq
    nxt = mold.ss_next[s]
    if not control and seq > nxt and n > PENDING_SLOT:
        # Too large to hold while the other line may fill the hole: treat it as not received.
        cnt[C.PENDING_FORCED] += 1
        return PACKET_DROPPED, s
    mold.ss_meta[SS_RESOLVE] = 1
    if control:
        _line_sent(mold, s, line, seq)
        if count == HEARTBEAT:
            cnt[C.HEARTBEATS] += 1
            return PACKET_HEARTBEAT, s
        cnt[C.END_OF_SESSION] += 1
        mold.ss_ended[s] = 1
        return PACKET_END_OF_SESSION, s
    while True:
        nxt = mold.ss_next[s]
        if seq + count <= nxt:
            _line_sent(mold, s, line, seq + count)
            cnt[C.DUPLICATE_PACKETS] += 1
            return PACKET_DUPLICATE, s
        if seq <= nxt:
            _line_sent(mold, s, line, seq + count)
            apply_blocks(buf, p + HEADER, count, nxt - seq, s, seq, bk, out, cnt, by_type)
            mold.ss_next[s] = seq + count
            return PACKET_APPLIED, s
        if cnt[C.PENDING] < MAX_PENDING:
            break
        # Pending table full: stop waiting on the oldest hole.  If this packet is older than everything its
        # session holds, the hole ends at this packet, which then applies at once; otherwise one forced step
        # releases (or declares lost) the oldest held packet, and this packet is looked at again.
        cnt[C.PENDING_FORCED] += 1
        oldest = _oldest_pending(mold, s, cnt)
        if oldest < 0 or seq < mold.pd_seq[oldest]:
            if oldest >= 0 or _any_pending(mold) < 0:
                _gap(mold, out, s, nxt, seq - 1)
                continue
            resolve_step(mold, mold.pd_sess[_any_pending(mold)], True, bk, out, cnt, by_type)
        else:
            resolve_step(mold, s, True, bk, out, cnt, by_type)
    # The line's mark moves only now, so no forced step above could count this packet's sequence numbers lost.
    _line_sent(mold, s, line, seq + count)
    _hold(mold, buf, p, n, s, seq, count, cnt)
    return PACKET_HELD, s


@kernel(inline="always")
def _line_sent(mold, s, line, sent_to):
    """Line ``line`` has now sent session ``s`` up to (not including) ``sent_to``."""
    if mold.ss_line_next[s, line] < sent_to:
        mold.ss_line_next[s, line] = sent_to


@kernel(inline="always")
def _any_pending(mold):
    for i in range(MAX_PENDING):
        if mold.pd_used[i] != 0:
            return i
    return -1


@kernel(inline="always")
def free_rows(out):
    """Rows every enabled output buffer can still take."""
    rows = out.bbo.shape[0]
    free = rows - max(out.n[N_BBO], out.n[N_TRADES], out.n[N_BROKEN], out.n[N_GAPS])
    if out.n[FLAG_PACKETS] != 0:
        free = min(free, out.packets.shape[0] - out.n[N_PACKETS])
    if out.n[FLAG_MESSAGES] != 0:
        free = min(free, out.msgs.shape[0] - out.n[N_MSGS])
    return free


@kernel(inline="always")
def has_room(out, margin):
    """True when every output buffer can take ``margin`` more rows (ROW_MARGIN: one record's worst case)."""
    return free_rows(out) >= margin


@kernel
def settle(mold, force, bk, out, cnt, by_type):
    """Release held packets and declare lost holes until nothing moves; False if stopped for output room.

    ``force`` (end of input) also gives up on holes that another line might still have filled.
    """
    for s in range(mold.ss_meta[SS_COUNT]):
        while True:
            if not has_room(out, ROW_MARGIN):
                return False
            if not resolve_step(mold, s, force, bk, out, cnt, by_type):
                break
    mold.ss_meta[SS_RESOLVE] = 0
    return True
