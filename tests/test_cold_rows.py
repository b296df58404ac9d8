"""The shared row rings between the hot side and its consumers (appliance/cold/rows.py), without a network.

* every consumer gets every row in order while it keeps up, each at its own pace;
* a consumer more than a ring behind loses the oldest rows: skipped, counted exactly, the rest in order;
* rows read while the producer overwrites the ring concurrently are never torn (each row's columns agree);
* messages keep their bytes and (session, sequence); a consumer maps the region from its file descriptor;
* the decoder's name tables move into the region with their contents (``Decoder.adopt``).
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from appliance.cold import rows as R
from appliance.decode import state as S


def _region(n=R.MIN_ROWS, messages=0):
    return R.Region.create({R.BBO: n, R.TAPE: n, R.GAPS: n, R.MESSAGES: messages})


def _publish_bbo(out, view, first, count):
    """Publish bbo rows whose six columns all hold the row's global index."""
    out.bbo[:count] = (np.arange(first, first + count, dtype=np.int64))[:, None]
    out.n[S.N_BBO] = count
    R.publish_now(out, view)
    assert out.n[S.N_BBO] == 0


def test_every_consumer_gets_every_row_in_order_at_its_own_pace():
    region = _region()
    view, out = region.hot_view(), S.new_out()
    fast, slow = R.Reader(region), R.Reader(region)
    assert (fast.slot, slow.slot) == (0, 1)
    got_fast = []
    for k in range(10):
        _publish_bbo(out, view, k * 300, 300)
        rows, lost = fast.take(R.BBO)
        assert lost == 0
        got_fast.extend(rows[:, 0].tolist())
    rows, lost = slow.take(R.BBO)                       # 3,000 rows behind: within the ring, nothing lost
    assert lost == 0 and rows[:, 0].tolist() == list(range(3000))
    assert got_fast == list(range(3000))
    assert (rows == rows[:, :1]).all()
    info = region.consumers()
    assert info[0]["rings"]["bbo"] == {"delivered": 3000, "lost": 0} == info[1]["rings"]["bbo"]
    region.close()


def test_a_consumer_more_than_a_ring_behind_loses_the_oldest_rows_counted():
    region = _region()
    view, out = region.hot_view(), S.new_out()
    late = R.Reader(region)
    total = 5 * R.MIN_ROWS + 123
    done = 0
    while done < total:
        k = min(1000, total - done)
        _publish_bbo(out, view, done, k)
        done += k
    keep = R.MIN_ROWS - R.PUBLISH_CHUNK               # what a consumer can still read intact
    seen, lost_total = [], 0
    while True:
        rows, lost = late.take(R.BBO)
        lost_total += lost
        if not len(rows):
            break
        seen.extend(rows[:, 0].tolist())
    assert lost_total == total - keep
    assert seen == list(range(total - keep, total))
    assert region.consumers()[0]["rings"]["bbo"] == {"delivered": keep, "lost": total - keep}
    assert region.published(R.BBO) == total
    region.close()


def test_rows_read_during_concurrent_overwrites_are_never_torn():
    """A producer thread publishes as fast as it can (the kernel releases the GIL) while a slow consumer reads:
    every row delivered has equal columns, indices only grow, and delivered + lost == published."""
    region = _region()
    view, out = region.hot_view(), S.new_out()
    reader = R.Reader(region, batch=2048)
    total = 400 * 1000

    def produce():
        for k in range(400):
            _publish_bbo(out, view, k * 1000, 1000)

    producer = threading.Thread(target=produce)
    producer.start()
    last, delivered, lost_total = -1, 0, 0
    while producer.is_alive() or reader.behind(R.BBO):
        rows, lost = reader.take(R.BBO)
        lost_total += lost
        if len(rows):
            assert (rows == rows[:, :1]).all(), "a torn row was delivered"
            assert rows[0, 0] > last and (np.diff(rows[:, 0]) == 1).all()
            last = int(rows[-1, 0])
            delivered += len(rows)
    producer.join()
    assert delivered + lost_total == total
    assert last == total - 1
    region.close()


def test_messages_keep_their_bytes_and_sequence_and_a_consumer_maps_the_region_by_fd():
    region = _region(messages=R.MIN_ROWS)
    view, out = region.hot_view(), S.new_out(messages=True)
    for i in range(5):
        out.msgs[i, :] = (np.arange(S.MSG_SLOT) + i) % 256
        out.msg_meta[i] = (i % 2, 1000 + i)
    out.n[S.N_MSGS] = 5
    R.publish_now(out, view)
    other = R.Region.attach(os.dup(region.fd))          # what the output process does with the inherited fd
    rows, lost = R.Reader(other).take(R.MESSAGES)
    assert lost == 0 and len(rows) == 5
    assert rows[:, 0].tolist() == [0, 1, 0, 1, 0] and rows[:, 1].tolist() == [1000, 1001, 1002, 1003, 1004]
    body = rows.view(np.uint8)[:, 16:]
    assert all((body[i] == (np.arange(S.MSG_SLOT) + i) % 256).all() for i in range(5))
    other.close()
    region.close()


def test_gaps_are_published_once_and_kept_for_the_summary():
    region = _region()
    view, out = region.hot_view(), S.new_out()
    sink = R.Publisher(view, out)
    out.gaps[:2] = [[0, 5, 7], [0, 9, 9]]
    out.n[S.N_GAPS] = 2
    R.publish_now(out, view)
    R.publish_now(out, view)                            # nothing new: not published twice
    assert region.published(R.GAPS) == 2 and out.n[S.N_GAPS] == 2
    out.gaps[2] = [1, 3, 4]
    out.n[S.N_GAPS] = 3
    sink.gaps(out.gaps, 3)                              # the driver collects them next and clears the buffer
    assert region.published(R.GAPS) == 3 and view.meta[R.RM_GAPS_SENT] == 0
    rows, _ = R.Reader(region).take(R.GAPS)
    assert rows.tolist() == [[0, 5, 7], [0, 9, 9], [1, 3, 4]]
    region.close()


def test_counter_blocks_are_shared_with_their_sizes():
    region = R.Region.create({R.BBO: R.MIN_ROWS}, {"cnt": 40, "by_type": 256, "cap": 16, "hist": 4096})
    region.cnt[22] = 12345
    region.hist[7] = 3
    other = R.Region.attach(os.dup(region.fd))
    assert [len(getattr(other, name)) for name in R.COUNTERS] == [40, 256, 16, 4096]
    assert other.cnt[22] == 12345 and other.hist[7] == 3
    other.close()
    region.close()


def test_slots_are_limited_and_a_bad_region_is_refused(tmp_path):
    region = _region()
    readers = [R.Reader(region) for _ in range(R.MAX_CONSUMERS)]
    with pytest.raises(ValueError, match="consumer slots"):
        R.Reader(region)
    readers[0].detach()
    assert region.consumers()[0]["attached"] is False
    path = tmp_path / "junk"
    path.write_bytes(b"\0" * 8192)
    with open(path, "rb+") as fh, pytest.raises(ValueError, match="not a row region"):
        R.Region.attach(fh.fileno())
    with pytest.raises(ValueError, match="power of two"):
        R.Region.create({R.BBO: 5000})
    region.close()


def test_decoder_adopt_moves_name_tables_with_their_contents():
    from appliance.replay.decoder import Decoder, Options

    dec = Decoder(Options(feeds=[(0xE9360C01, 26400)], order_capacity=64, level_pool=64), None)
    dec.book.sym[7] = np.frombuffer(b"ABCD    ", np.uint8)
    region = _region()
    dec.adopt(sym=region.sym, ln_group=region.ln_group, ln_meta=region.ln_meta)
    assert dec.book.sym is region.sym and dec.state.book.sym is region.sym
    assert bytes(region.sym[7]) == b"ABCD    " and region.ln_group[0] == 0xE9360C01 and region.ln_meta[0] == 1
    region.close()
