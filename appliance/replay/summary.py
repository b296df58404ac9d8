"""summary.json and the short human report, built from the kernels' state after the last input."""
from __future__ import annotations

import datetime
import ipaddress
import os
import re

import numpy as np

from appliance.decode import counters as C
from appliance.decode.levels import ASK_FLIP
from appliance.decode.state import LN_COUNT, SIDE_LEN, SIDE_START, SS_COUNT, STAT_CROSS, STAT_NOTIONAL, STAT_TRADES, \
    STAT_VOLUME
from appliance.display import printable
from appliance.itch.layout import TYPES


def _name(raw) -> str:
    return bytes(raw).decode("latin-1").rstrip(" ")



def _best(book, locate: int, side: int) -> tuple[int, int]:
    row = book.side[locate * 2 + side]
    n = int(row[SIDE_LEN])
    if n == 0:
        return 0, 0
    key, shares = (int(v) for v in book.lv[int(row[SIDE_START]) + n - 1])
    return (key if side == 0 else ASK_FLIP - key), shares


def symbols(book) -> dict:
    out = {}
    for loc in np.flatnonzero(book.sym_set):
        loc = int(loc)
        st = book.stats[loc]
        bid_p, bid_s = _best(book, loc, 0)
        ask_p, ask_s = _best(book, loc, 1)
        # notional accumulates u32 x u32 products: read it as the u64 it is
        volume, notional = int(st[STAT_VOLUME]), int(np.uint64(st[STAT_NOTIONAL]))
        out[_name(book.sym[loc])] = {
            "locate": loc, "bid_price": bid_p, "bid_size": bid_s, "ask_price": ask_p, "ask_size": ask_s,
            "volume": volume, "notional": notional, "trades": int(st[STAT_TRADES]),
            "vwap": round(notional / volume, 4) if volume else None, "cross_volume": int(st[STAT_CROSS]),
        }
    return out


def lines(mold) -> list[dict]:
    return [{"group": str(ipaddress.IPv4Address(int(mold.ln_group[i]))), "port": int(mold.ln_port[i]),
             "packets": int(mold.ln_packets[i])} for i in range(int(mold.ln_meta[LN_COUNT]))]


def sessions(mold) -> list[dict]:
    return [{"session": _name(mold.ss_name[s]), "first_sequence": int(mold.ss_first[s]),
             "next_sequence": int(mold.ss_next[s]), "ended": bool(mold.ss_ended[s])}
            for s in range(int(mold.ss_meta[SS_COUNT]))]


_DAYFILE_NAME = re.compile(r"(\d{2})(\d{2})(\d{4})\.")         # NASDAQ's MMDDYYYY.NASDAQ_ITCH50
TIMESTAMP_MEANING = ("ITCH timestamp_ns columns are nanoseconds since midnight, US Eastern time, of the "
                     "session's date (the feed carries no date)")


def session_date(paths: list[str], first_frame_ns: int) -> dict:
    """The trading day the feed's timestamps count from: a NASDAQ day file's name (MMDDYYYY.*), else the
    capture clock of the first feed frame in US Eastern time, else unknown."""
    for path in paths:
        name = os.path.basename(path)
        m = _DAYFILE_NAME.match(name)
        if m:
            try:
                day = datetime.date(int(m[3]), int(m[1]), int(m[2]))
            except ValueError:
                continue
            return {"date": day.isoformat(), "from": f"file name {name}"}
    if first_frame_ns > 0:
        try:
            from zoneinfo import ZoneInfo
            zone, label = ZoneInfo("America/New_York"), "US Eastern"
        except (ImportError, KeyError, OSError):
            zone, label = datetime.timezone.utc, "UTC: no time zone data installed"
        try:
            stamp = datetime.datetime.fromtimestamp(first_frame_ns / 1e9, zone)
        except (OverflowError, OSError, ValueError):
            return {"date": None, "from": "unknown: the first frame's capture time is out of range"}
        return {"date": stamp.date().isoformat(), "from": f"capture time of the first feed frame ({label})"}
    return {"date": None, "from": "unknown: no dated file name and no capture timestamps"}


def build(engine, feed_selection: str) -> dict:
    cnt, mold, res = engine.cnt, engine.mold, engine.result
    counters = {name: int(cnt[i]) for i, name in C.NAMES.items()}
    names = [s["session"] for s in sessions(mold)]
    summary = {
        "inputs": [{"path": s.path, "format": s.describe()} for s in res.sources],
        "input_errors": res.input_errors,
        "feed_selection": feed_selection,
        "session_date": session_date([s.path for s in res.sources], int(cnt[C.FIRST_FRAME_NS])),
        "timestamps": TIMESTAMP_MEANING,
        "lines": lines(mold),
        "packets": counters.pop("packets"),
        "bad_packets": counters.pop("bad_packets"),
        "duplicate_packets": counters.pop("duplicate_packets"),
        "heartbeats": counters.pop("heartbeats"),
        "end_of_session": [s["session"] for s in sessions(mold) if s["ended"]],
        "messages": counters.pop("messages"),
        "messages_by_type": {t: int(engine.by_type[ord(t)]) for t in TYPES},
        "gaps": [[names[s], first, last] for s, first, last in res.gaps],
        "open_orders": counters.pop("open_orders"),
        "unknown_order_refs": counters.pop("unknown_order_refs"),
        "rejected_adds": counters.pop("rejected_adds"),
        "broken_trades": counters.pop("broken_trades"),
        "broken_match_numbers": res.broken,
        "sessions": sessions(mold),
        "bad_messages": counters.pop("bad_messages"),
        **{key: counters.pop(key) for key in ("frames", "non_ipv4", "bad_ip", "truncated_frames", "ip_fragments",
                                              "non_udp", "bad_udp", "not_feed")},
        "counters": counters,
        "options": {"order_capacity": engine.options.order_capacity, "level_pool": engine.options.level_pool,
                    "vwap_window_ns": engine.options.window_ns, "vwap_step_ns": engine.options.step_ns},
        "elapsed_seconds": round(res.seconds, 3),
        "symbols": symbols(engine.book),
    }
    return summary


def _rate(messages: int, seconds: float) -> str:
    rate = messages / seconds if seconds else 0.0
    return f"{rate / 1e6:.2f} M msg/s" if rate >= 1e5 else f"{rate:,.0f} msg/s"


def report(summary: dict, out_dir: str) -> str:
    """The short human report printed on stdout; every line is passed through ``display.printable``, since
    session names, symbols and paths may come from a hostile feed or file."""
    c = {**summary, **summary["counters"]}
    lines_ = []
    if summary["inputs"]:
        lines_.append(f"inputs     {', '.join(i['path'] + ' [' + i['format'] + ']' for i in summary['inputs'])}")
    lines_.append(f"feed       {summary['feed_selection']}")
    for ln in summary["lines"]:
        lines_.append(f"  line     {ln['group']}:{ln['port']}  {ln['packets']:,} datagrams")
    lines_.append(f"frames     {c['frames']:,} read; skipped: {c['not_feed']:,} not feed, {c['non_ipv4']:,} non-IPv4, "
                  f"{c['non_udp']:,} non-UDP, {c['ip_fragments']:,} fragments, "
                  f"{c['truncated_frames'] + c['bad_ip'] + c['bad_udp']:,} truncated/bad headers")
    lines_.append(f"packets    {summary['packets']:,} MoldUDP64: {summary['bad_packets']:,} bad, "
                  f"{summary['duplicate_packets']:,} duplicate, {summary['heartbeats']:,} heartbeats, "
                  f"end of session: {', '.join(summary['end_of_session']) or 'not seen'}")
    gaps = summary["gaps"]
    lost = sum(g[2] - g[1] + 1 for g in gaps)
    lines_.append(f"gaps       {len(gaps)} ({lost:,} messages lost)" + (
        ": " + ", ".join(f"{g[0]} {g[1]}-{g[2]}" for g in gaps[:5]) + (" ..." if len(gaps) > 5 else "")
        if gaps else ""))
    speed = ("including compiling the kernels" if summary.get("elapsed_includes_compiling")
             else _rate(summary["messages"], summary["elapsed_seconds"]))
    lines_.append(f"messages   {summary['messages']:,} applied in {summary['elapsed_seconds']:.2f} s ({speed})"
                  + (f"; {c['bad_messages']:,} bad day-file records" if c['bad_messages'] else ""))
    by_type = "  ".join(f"{t} {n:,}" for t, n in summary["messages_by_type"].items() if n)
    lines_.append(f"  by type  {by_type}")
    lines_.append(f"orders     {summary['open_orders']:,} open at end; {summary['unknown_order_refs']:,} unknown "
                  f"refs; {summary['rejected_adds']:,} rejected adds; {summary['broken_trades']:,} broken trades")
    syms = summary["symbols"]
    active = sorted(syms.items(), key=lambda kv: -kv[1]["volume"])[:5]
    lines_.append(f"symbols    {len(syms):,} in the directory; top by volume:")
    for name, s in active:
        if not s["volume"]:
            break
        lines_.append(f"  {name:8s} vol {s['volume']:>12,}  vwap {s['vwap'] / 1e4:>10.4f}  "
                      f"bid {s['bid_price'] / 1e4:.4f} x {s['bid_size']:,}  ask {s['ask_price'] / 1e4:.4f} x "
                      f"{s['ask_size']:,}")
    for key in ("order_table_full", "level_pool_full", "pending_forced", "sessions_overflow", "lines_overflow",
                "vwap_late_trades", "truncated_records"):
        if c.get(key):
            lines_.append(f"warning    {key.replace('_', ' ')}: {c[key]:,} (see README, Capacities and limits)")
    for err in summary["input_errors"]:
        lines_.append(f"error      {err}")
    lines_.append(f"output     {out_dir}/summary.json, bbo.csv, trades.csv, broken.csv, vwap.csv"
                  + (", messages.csv" if summary.get("messages_csv") else ""))
    return "\n".join(printable(line) for line in lines_)
