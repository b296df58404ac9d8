"""The reference replay on hand-built inputs, one contract rule per test, expected values worked out by hand.

These pin the reference itself; ``test_equivalence.py`` then holds the engine to the reference.
"""
from __future__ import annotations

import pytest

from appliance.itch.layout import decode
from reference import build as b
from reference import reference_replay
from reference.build import GROUP_A, GROUP_B

S, W = 100_000_000, 1_000_000_000          # default VWAP step and window


def day(tmp_path, messages, **kw):
    return reference_replay(b.write(tmp_path / "day.bin", b.dayfile_bytes(messages)), **kw)


def cap(tmp_path, frames, **kw):
    return reference_replay(b.write(tmp_path / "cap.pcap", b.pcap_bytes(frames)), **kw)


def applied(result):
    """(sequence, decoded message) for every applied message, in order."""
    return [(seq, m) for _session, seq, m in result["messages"]]


def sequences(result):
    return [seq for seq, _ in applied(result)]


def packets(*moldpackets, group=GROUP_A):
    return [b.udp_frame(p, group=group) for p in moldpackets]


# -- book rules ---------------------------------------------------------------------------------------
def test_partial_execution_then_over_execution_takes_what_remains(tmp_path):
    r = day(tmp_path, [b.directory(7, "ACME"), b.add(11, "B", 100, 250_000, locate=7, ts=10),
                       b.execute(11, 30, 901, locate=7, ts=20), b.execute(11, 500, 902, locate=7, ts=30),
                       b.execute(11, 1, 903, locate=7, ts=40)])
    assert r["trades"] == [(20, 7, "ACME", "E", "B", 30, 250_000, 901), (30, 7, "ACME", "E", "B", 70, 250_000, 902)]
    assert r["bbo"] == [(10, 7, "ACME", 250_000, 100, 0, 0), (20, 7, "ACME", 250_000, 70, 0, 0),
                        (30, 7, "ACME", 0, 0, 0, 0)]
    s = r["summary"]
    assert s["open_orders"] == 0 and s["unknown_order_refs"] == 1
    assert s["symbols"]["ACME"] == {"locate": 7, "bid_price": 0, "bid_size": 0, "ask_price": 0, "ask_size": 0,
                                    "volume": 100, "notional": 100 * 250_000, "trades": 2, "vwap": 250_000.0,
                                    "cross_volume": 0}


def test_execution_with_price_trades_at_its_own_price_and_non_printable_only_reduces_the_book(tmp_path):
    r = day(tmp_path, [b.directory(1, "X"), b.add(5, "S", 300, 100_000, ts=1),
                       b.execute_at(5, 100, 77, 99_000, "Y", ts=2), b.execute_at(5, 50, 78, 98_000, "N", ts=3),
                       b.execute_at(5, 0, 79, 98_000, "Y", ts=4)])
    assert r["trades"] == [(2, 1, "X", "C", "S", 100, 99_000, 77)]
    assert r["bbo"] == [(1, 1, "X", 0, 0, 100_000, 300), (2, 1, "X", 0, 0, 100_000, 200),
                        (3, 1, "X", 0, 0, 100_000, 150)]
    sym = r["summary"]["symbols"]["X"]
    assert (sym["volume"], sym["notional"], sym["trades"], sym["ask_size"]) == (100, 9_900_000, 1, 150)
    assert r["summary"]["open_orders"] == 1


def test_cancel_partial_then_beyond_remaining_and_delete(tmp_path):
    r = day(tmp_path, [b.add(1, "B", 100, 10, ts=1), b.add(2, "B", 40, 10, ts=2), b.cancel(1, 30, ts=3),
                       b.cancel(1, 1000, ts=4), b.delete(2, ts=5), b.delete(2, ts=6), b.cancel(1, 1, ts=7)])
    assert r["bbo"] == [(1, 1, "", 10, 100, 0, 0), (2, 1, "", 10, 140, 0, 0), (3, 1, "", 10, 110, 0, 0),
                        (4, 1, "", 10, 40, 0, 0), (5, 1, "", 0, 0, 0, 0)]
    assert r["summary"]["open_orders"] == 0
    assert r["summary"]["unknown_order_refs"] == 2
    assert r["trades"] == []


def test_replace_chain_keeps_side_and_locate_of_the_original(tmp_path):
    r = day(tmp_path, [b.directory(3, "CHN"), b.add(1, "S", 100, 500, locate=3, ts=1),
                       b.replace(1, 2, 80, 510, locate=3, ts=2), b.replace(2, 3, 60, 505, locate=9, ts=3),
                       b.execute(3, 10, 1, locate=3, ts=4), b.execute(1, 10, 2, locate=3, ts=5),
                       b.delete(2, locate=3, ts=6)])
    assert r["bbo"] == [(1, 3, "CHN", 0, 0, 500, 100), (2, 3, "CHN", 0, 0, 510, 80), (3, 3, "CHN", 0, 0, 505, 60),
                        (4, 3, "CHN", 0, 0, 505, 50)]
    assert r["trades"] == [(4, 3, "CHN", "E", "S", 10, 505, 1)]
    assert r["summary"]["unknown_order_refs"] == 2
    assert r["summary"]["open_orders"] == 1


def test_replace_to_the_same_reference_is_allowed_and_replace_onto_a_live_reference_is_a_rejected_add(tmp_path):
    r = day(tmp_path, [b.add(1, "B", 100, 500, ts=1), b.add(2, "B", 10, 400, ts=2),
                       b.replace(1, 1, 50, 501, ts=3), b.replace(1, 2, 70, 502, ts=4), b.replace(2, 0, 5, 1, ts=5)])
    s = r["summary"]
    assert s["rejected_adds"] == 2        # new ref 2 is live; new ref 0
    assert s["open_orders"] == 0          # the original of each U is gone even when the new add is rejected
    assert r["bbo"] == [(1, 1, "", 500, 100, 0, 0), (3, 1, "", 501, 50, 0, 0), (4, 1, "", 400, 10, 0, 0),
                        (5, 1, "", 0, 0, 0, 0)]


def test_unknown_references_are_counted_and_change_nothing(tmp_path):
    r = day(tmp_path, [b.add(1, "B", 100, 500, ts=1), b.execute(9, 10, 1), b.execute_at(9, 10, 2, 500),
                       b.cancel(9, 10), b.delete(9), b.replace(9, 10, 10, 500), b.delete(10)])
    s = r["summary"]
    assert s["unknown_order_refs"] == 6   # the U does not add ref 10, so its delete is unknown too
    assert s["open_orders"] == 1 and r["trades"] == [] and len(r["bbo"]) == 1


def test_rejected_adds(tmp_path):
    r = day(tmp_path, [b.add(0, "B", 100, 500), b.add(1, "X", 100, 500), b.add(2, "S", 0, 500),
                       b.add(3, "S", 10, 500, ts=1), b.add(3, "B", 10, 400, mpid="MPID"),
                       b.add(4, "B", 20, 400, mpid="MPID", ts=2)])
    s = r["summary"]
    assert s["rejected_adds"] == 4 and s["open_orders"] == 2
    assert s["messages"] == 6 and s["messages_by_type"]["A"] == 4 and s["messages_by_type"]["F"] == 2
    assert r["bbo"] == [(1, 1, "", 0, 0, 500, 10), (2, 1, "", 400, 20, 500, 10)]


def test_top_of_book_aggregates_levels_and_emits_only_on_change(tmp_path):
    r = day(tmp_path, [b.add(1, "B", 100, 500, ts=1), b.add(2, "B", 50, 490, ts=2), b.add(3, "B", 25, 500, ts=3),
                       b.add(4, "S", 10, 520, ts=4), b.add(5, "S", 10, 530, ts=5), b.add(6, "S", 5, 510, ts=6),
                       b.delete(1, ts=7), b.delete(3, ts=8), b.add(7, "B", 1, 100, locate=2, ts=9)])
    assert r["bbo"] == [(1, 1, "", 500, 100, 0, 0), (3, 1, "", 500, 125, 0, 0), (4, 1, "", 500, 125, 520, 10),
                        (6, 1, "", 500, 125, 510, 5), (7, 1, "", 500, 25, 510, 5), (8, 1, "", 490, 50, 510, 5),
                        (9, 2, "", 100, 1, 0, 0)]


def test_trade_cross_and_broken_trade(tmp_path):
    r = day(tmp_path, [b.directory(4, "TRD"), b.trade("S", 200, 1_000, 31, locate=4, ts=5),
                       b.trade("B", 0, 1_000, 32, locate=4, ts=6), b.cross(5_000_000_000, 1_010, 33, locate=4, ts=7),
                       b.cross(0, 1_010, 34, locate=4, ts=8), b.broken(31, ts=9), b.broken(99, ts=10)])
    assert r["trades"] == [(5, 4, "TRD", "P", "S", 200, 1_000, 31), (7, 4, "TRD", "Q", "", 5_000_000_000, 1_010, 33)]
    s = r["summary"]
    sym = s["symbols"]["TRD"]
    assert (sym["volume"], sym["notional"], sym["trades"], sym["cross_volume"]) == (200, 200_000, 1, 5_000_000_000)
    assert s["broken_trades"] == 2 and s["broken_match_numbers"] == [31, 99]
    assert r["bbo"] == []


def test_symbol_is_the_latest_directory_name_and_unnamed_locates_stay_out_of_symbols(tmp_path):
    r = day(tmp_path, [b.trade("B", 1, 10, 1, locate=5, ts=1), b.directory(5, "OLD"), b.directory(5, "NEW"),
                       b.trade("B", 1, 10, 2, locate=6, ts=2)])
    assert [row[2] for row in r["trades"]] == ["NEW", ""]
    assert set(r["summary"]["symbols"]) == {"NEW"} and r["summary"]["symbols"]["NEW"]["vwap"] == 10.0


def test_vwap_windows_by_hand(tmp_path):
    # trades at 150 ms (100 @ 10) and 1.05 s (300 @ 20), the last message at 1.12 s: window ends up to 1.2 s.
    r = day(tmp_path, [b.trade("B", 100, 10, 1, ts=150_000_000), b.trade("S", 300, 20, 2, ts=1_050_000_000),
                       b.cross(1000, 30, 3, ts=1_060_000_000), b.system_event(ts=1_120_000_000)])
    rows = [(end, volume, notional, trades) for end, _loc, _sym, volume, notional, _v, trades in r["vwap"]]
    first_only = [(k * S, 100, 1000, 1) for k in range(2, 11)]                      # 0.2 s .. 1.0 s
    assert rows == first_only + [(11 * S, 400, 7000, 2), (12 * S, 300, 6000, 1)]
    assert [row[5] for row in r["vwap"]][-2:] == [7000 / 400, 20.0]


def test_vwap_window_and_step_are_parameters(tmp_path):
    r = day(tmp_path, [b.trade("B", 10, 7, 1, ts=0), b.system_event(ts=10_000)], window_ns=2_000, step_ns=1_000)
    assert [(row[0], row[3], row[6]) for row in r["vwap"]] == [(1_000, 10, 1), (2_000, 10, 1)]


# -- MoldUDP64 sequencing -----------------------------------------------------------------------------
def msgs(n, first_ref):
    return [b.add(first_ref + i, "B", 100, 1000 + i) for i in range(n)]


def test_gap_on_a_single_line(tmp_path):
    r = cap(tmp_path, packets(b.mold(1, msgs(2, 1)), b.mold(5, msgs(1, 5)), b.mold(6, msgs(1, 6))))
    assert r["summary"]["gaps"] == [["TEST000001", 3, 4]]
    assert sequences(r) == [1, 2, 5, 6]
    assert r["summary"]["packets"] == 3 and r["summary"]["frames"] == 3


def test_duplicate_and_overlapping_packets(tmp_path):
    r = cap(tmp_path, packets(b.mold(1, msgs(3, 1)), b.mold(1, msgs(3, 1)), b.mold(2, msgs(1, 2)),
                              b.mold(3, msgs(3, 3))))
    assert r["summary"]["duplicate_packets"] == 2
    assert sequences(r) == [1, 2, 3, 4, 5]          # the overlapping packet adds only 4 and 5
    assert [m["Order Reference Number"] for _, m in applied(r)] == [1, 2, 3, 4, 5]
    assert r["summary"]["gaps"] == []


def test_ab_lines_fill_each_others_holes_first_copy_wins(tmp_path):
    a = packets(b.mold(1, msgs(2, 1)), b.mold(5, msgs(1, 5)), b.mold(6, msgs(1, 6)), group=GROUP_A)   # A lost 3-4
    bb = packets(b.mold(1, msgs(2, 1)), b.mold(3, msgs(2, 3)), b.mold(5, msgs(1, 5)), group=GROUP_B)
    r = cap(tmp_path, [a[0], bb[0], a[1], a[2], bb[1], bb[2]])
    s = r["summary"]
    assert s["gaps"] == [] and sequences(r) == [1, 2, 3, 4, 5, 6]
    assert s["duplicate_packets"] == 2 and s["packets"] == 6


def test_a_hole_on_both_lines_is_a_gap_once_both_have_moved_past(tmp_path):
    a = packets(b.mold(1, msgs(1, 1)), b.mold(3, msgs(1, 3)), group=GROUP_A)
    bb = packets(b.mold(1, msgs(1, 1)), b.mold(3, msgs(1, 3)), group=GROUP_B)
    r = cap(tmp_path, [a[0], bb[0], a[1], bb[1]])
    assert r["summary"]["gaps"] == [["TEST000001", 2, 2]] and sequences(r) == [1, 3]


def test_heartbeat_reveals_a_gap(tmp_path):
    r = cap(tmp_path, packets(b.mold(1, msgs(1, 1)), b.heartbeat(4), b.heartbeat(4)))
    s = r["summary"]
    assert s["gaps"] == [["TEST000001", 2, 3]] and s["heartbeats"] == 2 and s["packets"] == 3


def test_held_packets_are_resolved_at_end_of_input(tmp_path):
    # Line B carries the session and then falls silent: A's later packets wait for B until the input ends.
    a = packets(b.mold(1, msgs(1, 1)), b.mold(3, msgs(1, 3)), b.mold(6, msgs(2, 6)), group=GROUP_A)
    bb = packets(b.mold(1, msgs(1, 1)), group=GROUP_B)
    r = cap(tmp_path, [a[0], bb[0], a[1], a[2]])
    assert r["summary"]["gaps"] == [["TEST000001", 2, 2], ["TEST000001", 4, 5]]
    assert sequences(r) == [1, 3, 6, 7]


def test_end_of_session_and_session_names(tmp_path):
    other = b"OTHER     "
    r = cap(tmp_path, packets(b.mold(1, msgs(1, 1)), b.mold(1, msgs(1, 2), session=other),
                              b.end_of_session(2), b.end_of_session(2), b.end_of_session(2, session=other)))
    s = r["summary"]
    assert s["end_of_session"] == ["TEST000001", "OTHER"] and s["gaps"] == []
    assert [session for session, _, _ in r["messages"]] == ["TEST000001", "OTHER"]


BAD_PAYLOADS = {
    "shorter than the header": b.mold(2, msgs(1, 2))[:19],
    "block length past the end": b.mold(2, msgs(1, 2))[:-1],
    "length disagrees with the type": b.mold(2, [b.add(2, "B", 1, 1)[:-1] + b"\x00\x00"]),
    "unknown type": b.mold(2, [b"Z" + bytes(35)]),
    "zero-length block": b.mold(2, [b""]),
    "count larger than the blocks": b.mold(2, msgs(1, 2), count=2),
    "count smaller than the blocks": b.mold(2, msgs(2, 2), count=1),
    "trailing garbage": b.mold(2, msgs(1, 2)) + b"\x00",
    "block header cut": b.mold(2, msgs(1, 2), count=2) + b"\x00",
    "heartbeat with trailing bytes": b.heartbeat(5) + b"\x00",
    "end of session with trailing bytes": b.end_of_session(5) + b"\x00\x00",
}


@pytest.mark.parametrize("kind", sorted(BAD_PAYLOADS))
def test_bad_packet_is_counted_and_its_neighbours_decode_exactly(tmp_path, kind):
    before, after = msgs(1, 1), msgs(2, 2)
    r = cap(tmp_path, packets(b.mold(1, before), BAD_PAYLOADS[kind], b.mold(2, after)))
    s = r["summary"]
    assert s["bad_packets"] == 1 and s["packets"] == 3
    assert s["gaps"] == [] and s["duplicate_packets"] == 0 and s["heartbeats"] == 0 and s["end_of_session"] == []
    assert applied(r) == [(1, decode(before[0])), (2, decode(after[0])), (3, decode(after[1]))]


def test_a_bad_packet_does_not_make_its_line_carry_the_session(tmp_path):
    a = packets(b.mold(1, msgs(1, 1)), b.mold(3, msgs(1, 3)), group=GROUP_A)
    r = cap(tmp_path, [a[0], b.udp_frame(b.mold(1, msgs(1, 1))[:-1], group=GROUP_B), a[1]])
    assert r["summary"]["gaps"] == [["TEST000001", 2, 2]] and r["summary"]["bad_packets"] == 1


# -- frames and feeds ---------------------------------------------------------------------------------
def test_vlan_qinq_and_ip_options_decode(tmp_path):
    frames = [b.udp_frame(b.mold(1, msgs(1, 1)), vlans=(0x8100,)),
              b.udp_frame(b.mold(2, msgs(1, 2)), vlans=(0x88A8, 0x8100)),
              b.udp_frame(b.mold(3, msgs(1, 3)), vlans=(0x9100, 0x88A8, 0x8100, 0x8100)),
              b.udp_frame(b.mold(4, msgs(1, 4)), ip_options=b"\x01\x01\x01\x00" * 10),
              b.udp_frame(b.mold(5, msgs(1, 5)), vlans=(0x8100,) * 5)]
    s = cap(tmp_path, frames)["summary"]
    assert s["messages"] == 4 and s["non_ipv4"] == 1 and s["gaps"] == []


@pytest.mark.parametrize("frame, counter", [
    (b.udp_frame(b.mold(2, msgs(1, 2)), flags_fragment=0x2000), "ip_fragments"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), flags_fragment=0x0010), "ip_fragments"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), ethertype=0x0806), "non_ipv4"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), ethertype=0x86DD), "non_ipv4"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), protocol=6), "non_udp"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), udp_length=7), "bad_udp"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), udp_length=200), "bad_udp"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), version=6), "bad_ip"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), ihl=4), "bad_ip"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), total_length=19), "bad_ip"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), total_length=1400), "bad_ip"),
    (b.udp_frame(b.heartbeat(2), ihl=15), "bad_ip"),
    ((b.udp_frame(b.mold(2, msgs(1, 2)))[:60], 100), "truncated_frames"),
    ((b.udp_frame(b.mold(2, msgs(1, 2)))[:20], 100), "truncated_frames"),
    (b.udp_frame(b.mold(2, msgs(1, 2)))[:13], "truncated_frames"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), vlans=(0x8100,))[:16], "truncated_frames"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), group="10.1.2.3"), "not_feed"),
    (b.udp_frame(b.mold(2, msgs(1, 2)), group="224.0.0.251"), "not_feed"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_frame_verdicts(tmp_path, frame, counter):
    good_before, good_after = b.udp_frame(b.mold(1, msgs(1, 1))), b.udp_frame(b.mold(2, msgs(1, 2)))
    s = cap(tmp_path, [good_before, frame, good_after])["summary"]
    assert s[counter] == 1, counter
    others = ("non_ipv4", "bad_ip", "truncated_frames", "ip_fragments", "non_udp", "bad_udp", "not_feed")
    assert sum(s[name] for name in others) == 1
    assert s["frames"] == 3 and s["packets"] == 2 and s["messages"] == 2 and s["gaps"] == []


def test_truncation_that_only_cuts_ethernet_padding_is_harmless(tmp_path):
    frame = b.udp_frame(b.heartbeat(1), pad_to=60)        # 42 + 20 bytes: no padding; make some
    padded = frame + bytes(30)
    s = cap(tmp_path, [(padded[:len(frame)], len(padded))])["summary"]
    assert s["heartbeats"] == 1 and s["truncated_frames"] == 0


def test_explicit_feeds_select_exactly_those_destinations(tmp_path):
    frames = [b.udp_frame(b.mold(1, msgs(1, 1)), group=GROUP_A), b.udp_frame(b.mold(1, msgs(1, 9)), group=GROUP_B),
              b.udp_frame(b.mold(2, msgs(1, 2)), group="10.9.9.9"),
              b.udp_frame(b.mold(3, msgs(1, 3)), group=GROUP_A, port=1)]
    r = cap(tmp_path, frames, feeds=[f"{GROUP_B}:{b.PORT}", "10.9.9.9:26400"])
    assert sequences(r) == [1, 2] and [m["Order Reference Number"] for _, m in applied(r)] == [9, 2]
    assert r["summary"]["not_feed"] == 2 and r["summary"]["packets"] == 2


def test_auto_selection_takes_at_most_16_lines_in_order_of_appearance(tmp_path):
    frames = [b.udp_frame(b.mold(1, msgs(1, i), session=b"S%02d" % i), group=f"239.1.1.{i}")
              for i in range(1, 18)]
    s = cap(tmp_path, frames)["summary"]
    assert s["packets"] == 16 and s["not_feed"] == 1 and s["messages"] == 16


# -- inputs -------------------------------------------------------------------------------------------
def stream():
    return packets(b.mold(1, [b.directory(1, "AB"), b.add(1, "B", 10, 100, ts=1)]),
                   b.mold(4, [b.execute(1, 4, 1, ts=3)]), b.heartbeat(5))


FORMATS = {
    "pcap": lambda f: b.pcap_bytes(f),
    "pcap-ns-be": lambda f: b.pcap_bytes(f, nanos=True, big_endian=True),
    "pcap-be": lambda f: b.pcap_bytes(f, big_endian=True),
    "pcapng": lambda f: b.pcapng_bytes(f),
    "pcapng-be-spb": lambda f: b.pcapng_bytes(f, big_endian=True, simple=True),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("compressed", [False, True])
def test_every_capture_format_gives_the_same_result(tmp_path, fmt, compressed):
    path = b.write(tmp_path / "in", FORMATS[fmt](stream()), gzip=compressed)
    got = reference_replay(path)
    want = reference_replay(b.write(tmp_path / "plain.pcap", b.pcap_bytes(stream())))
    assert got == want
    assert got["summary"]["gaps"] == [["TEST000001", 3, 3]] and got["trades"][0][5] == 4


@pytest.mark.parametrize("length", [60, 61, 62, 63])
def test_pcapng_records_keep_captured_bytes_without_block_padding(length):
    from reference.inputs import pcapng_records

    frame = bytes(range(length))
    enhanced = list(pcapng_records(b.pcapng_bytes([frame, (frame[:50], length)])))
    assert [(r.data, r.wire_length) for r in enhanced] == [(frame, length), (frame[:50], length)]
    simple = list(pcapng_records(b.pcapng_bytes([frame], simple=True)))   # an SPB is cut only by the snaplen
    assert [(r.data, r.wire_length) for r in simple] == [(frame, length)]


def test_unsupported_linktype_is_counted_per_record(tmp_path):
    s = reference_replay(b.write(tmp_path / "raw.pcap", b.pcap_bytes(stream(), linktype=101)))["summary"]
    assert s["unsupported_linktype"] == 3 and s["frames"] == 3 and s["packets"] == 0


def test_day_file_bad_and_truncated_records(tmp_path):
    good = [b.add(1, "B", 10, 100), b.delete(1)]
    one_byte_short = b.add(2, "S", 10, 200)[:-1]
    raw = (b.dayfile_bytes([good[0]]) + b"\x00\x00" + b.dayfile_bytes([b"Z" + bytes(9), one_byte_short])
           + b.dayfile_bytes([good[1]]) + b"\x00\x24" + good[0][:10])
    r = reference_replay(b.write(tmp_path / "d.bin", raw, gzip=True))
    s = r["summary"]
    assert s["bad_messages"] == 3 and s["truncated_records"] == 1
    assert [m for _, m in applied(r)] == [decode(m) for m in good]
    assert s["packets"] == 0 and s["frames"] == 0


def test_several_inputs_are_one_stream(tmp_path):
    first, second, third = stream()
    p1 = b.write(tmp_path / "1.pcap", b.pcap_bytes([first]))
    p2 = b.write(tmp_path / "2.pcapng", b.pcapng_bytes([second, third]), gzip=True)
    whole = reference_replay(b.write(tmp_path / "all.pcap", b.pcap_bytes(stream())))
    split = reference_replay([p1, p2])
    assert split == whole
    day_tail = b.write(tmp_path / "3.bin", b.dayfile_bytes([b.delete(1, ts=9)]))
    mixed = reference_replay([p1, p2, day_tail])
    assert mixed["summary"]["open_orders"] == 0 and mixed["bbo"][-1] == (9, 1, "AB", 0, 0, 0, 0)
