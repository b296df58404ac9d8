"""messages.csv rows from the numba formatter (csvfmt.format_messages) against the writer it replaced: Python's
csv module over ``layout.decode`` (kept below as the reference), byte for byte, on random message bytes of every
type -- hostile alpha bytes (comma, quote, CR, LF, NUL, latin-1) and integers up to 2**64-1 included -- and on
random session names and sequence numbers.  Also the digit writer at its edges and the VWAP window order."""
from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import numpy as np
import pytest

from appliance.decode.state import MSG_SLOT
from appliance.itch.layout import MESSAGE_LENGTH, MESSAGES, all_field_names, decode
from appliance.replay.csvfmt import INT, format_rows, spec
from appliance.replay.output import _MessagesFile, _session_name


def reference_rows(msgs, meta, n, mold) -> bytes:
    """The writer messages.csv had before the kernel (csv.writer, a text file in UTF-8, newline='')."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    fields = all_field_names()
    writer.writerow(["session", "sequence"] + fields)
    for i in range(n):
        sess = int(meta[i, 0])
        name = "" if sess < 0 else _session_name(mold, sess)
        decoded = decode(bytes(msgs[i, :int(MESSAGE_LENGTH[msgs[i, 0]])]))
        writer.writerow([name, int(meta[i, 1])] + [decoded.get(f, "") for f in fields])
    return text.getvalue().encode("utf-8")


def random_messages(rng, n: int):
    types = np.frombuffer("".join(MESSAGES).encode(), np.uint8)
    msgs = rng.integers(0, 256, (n, MSG_SLOT), dtype=np.uint8)
    # bias the bytes towards the ones that need care in CSV, and towards spaces (trailing ones are dropped)
    special = np.frombuffer(b' ,"\r\n\x00\x7f\xe9\xff', np.uint8)
    pick = rng.random((n, MSG_SLOT)) < 0.3
    msgs[pick] = rng.choice(special, int(pick.sum()))
    msgs[:, 0] = rng.choice(types, n)
    meta = np.stack([rng.integers(-1, 3, n), rng.integers(-(1 << 63), (1 << 63) - 1, n, dtype=np.int64)], axis=1)
    meta[:4, 1] = [0, -1, (1 << 63) - 1, -(1 << 63)]
    return msgs, meta


def mold_with_names(names: list[bytes]):
    ss_name = np.full((64, 10), 32, np.uint8)
    for s, name in enumerate(names):
        ss_name[s, :len(name)] = np.frombuffer(name, np.uint8)
    return SimpleNamespace(ss_meta=np.array([len(names), 0], np.int64), ss_name=ss_name)


def kernel_rows(tmp_path, msgs, meta, n, mold, text_bytes=None) -> bytes:
    out = _MessagesFile(tmp_path / "messages.csv")
    if text_bytes is not None:
        out.text = np.empty(text_bytes, np.uint8)         # a small buffer: rows split across many kernel calls
    out.write(msgs, meta, n, mold)
    out.close()
    return (tmp_path / "messages.csv").read_bytes()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_message_rows_equal_the_csv_module_byte_for_byte(tmp_path, seed):
    rng = np.random.default_rng(seed)
    msgs, meta = random_messages(rng, 5000)
    mold = mold_with_names([b"SESS,ONE", b'A"\xe9 \x01Z', b"000000001"])
    assert kernel_rows(tmp_path, msgs, meta, len(msgs), mold) == reference_rows(msgs, meta, len(msgs), mold)


def test_message_rows_split_over_a_small_buffer(tmp_path):
    rng = np.random.default_rng(9)
    msgs, meta = random_messages(rng, 300)
    mold = mold_with_names([b"S1"])
    meta[:, 0] = np.minimum(meta[:, 0], 0)
    assert kernel_rows(tmp_path, msgs, meta, 300, mold, text_bytes=3000) == reference_rows(msgs, meta, 300, mold)


def test_integers_at_their_edges():
    values = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345678901234567, (1 << 63) - 1, -(1 << 63), -1]
    values += [10 ** k for k in range(19)] + [10 ** k - 1 for k in range(1, 19)]
    rows = np.array(values, np.int64).reshape(-1, 1)
    dst = np.empty(1 << 16, np.uint8)
    wrote, used = format_rows(rows, len(rows), spec((INT, 0)), np.zeros((1, 8), np.uint8), dst)
    assert wrote == len(rows)
    assert bytes(dst[:used]).decode().splitlines() == [str(v % (1 << 64)) for v in values]


def test_vwap_windows_come_out_in_locate_order():
    """The fold emits each window's rows sorted by locate, whatever order the instruments traded in and went
    quiet in (writers no longer sort); its sums equal a direct computation over the same trades."""
    from appliance.decode import counters as C
    from appliance.decode.state import KIND_CLOCK, TAPE_KIND, TAPE_LOCATE, TAPE_PRICE, TAPE_SHARES, TAPE_TS
    from appliance.decode.vwap import NEED_MORE, feed_trades, finish_windows, new_vwap

    rng = np.random.default_rng(4)
    step, window = 100, 1000
    n = 20_000
    tape = np.zeros((n, 7), np.int64)
    tape[:, TAPE_TS] = np.sort(rng.integers(0, 200_000, n))
    tape[:, TAPE_LOCATE] = rng.choice(rng.permutation(65536)[:300], n)
    tape[:, TAPE_KIND] = np.where(rng.random(n) < 0.1, KIND_CLOCK, ord("E"))
    tape[:, TAPE_SHARES] = rng.integers(1, 1000, n)
    tape[:, TAPE_PRICE] = rng.integers(1, 10**6, n)
    vw, cnt = new_vwap(window, step), np.zeros(C.SIZE, np.int64)
    out = []
    r = 0
    while True:
        r, status = feed_trades(tape, r, n, vw, cnt)
        out.append(vw.rows[:vw.n[0]].copy())
        vw.n[0] = 0
        if status == NEED_MORE:
            break
    while not finish_windows(vw):
        out.append(vw.rows[:vw.n[0]].copy())
        vw.n[0] = 0
    out.append(vw.rows[:vw.n[0]].copy())
    rows = np.concatenate(out)
    assert len(rows) > 10_000
    key = rows[:, 0] * 65536 + rows[:, 1]
    assert (np.diff(key) > 0).all(), "windows in order, locates in order within each window"
    trades = tape[tape[:, TAPE_KIND] != KIND_CLOCK]
    for end, loc, vol, notional, count in rows[rng.choice(len(rows), 200, replace=False)]:
        inside = trades[(trades[:, TAPE_LOCATE] == loc) & (trades[:, TAPE_TS] >= end - window)
                        & (trades[:, TAPE_TS] < end)]
        assert (vol, notional, count) == (inside[:, TAPE_SHARES].sum(),
                                          (inside[:, TAPE_SHARES] * inside[:, TAPE_PRICE]).sum(), len(inside))
