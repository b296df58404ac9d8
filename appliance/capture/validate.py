"""Live equals replay: send a capture through the lab, capture it, and compare with offline replay of it.

The comparison covers what the feed means, not how frames travelled: MoldUDP64 packets, duplicates,
heartbeats, end of session, gaps, messages (by type), open orders and unknown references, broken trades,
every instrument's final book, volume, notional and trade count, and the bytes of ``bbo.csv``,
``trades.csv`` and ``vwap.csv``.  Frame-level counters are left out on purpose: the XDP program and the TPACKET filter keep
non-feed frames (ARP, malformed headers) away from the decoder, so ``frames`` legitimately differs.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from appliance.display import printable

COMPARED = ("packets", "bad_packets", "duplicate_packets", "heartbeats", "end_of_session", "messages",
            "messages_by_type", "gaps", "open_orders", "unknown_order_refs", "rejected_adds", "broken_trades",
            "broken_match_numbers")
TABLES = ("bbo.csv", "trades.csv", "vwap.csv")


def _digest(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compare(replay: dict, live: dict, replay_dir: Path, live_dir: Path) -> list[str]:
    """Differences as readable lines (empty: the same), ready for a terminal: symbols, session names (in gaps,
    end of session) and paths are escaped (``display.printable``)."""
    diffs = []
    for key in COMPARED:
        if replay.get(key) != live.get(key):
            a, b = replay.get(key), live.get(key)
            if isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(set(a) | set(b))
                parts = [f"{k}: {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k)]
                diffs.append(f"{key:20s} replay vs live: " + "; ".join(parts[:8]) + (" ..." if len(parts) > 8 else ""))
            else:
                diffs.append(f"{key:20s} replay {a} vs live {b}")
    rs, ls = replay.get("symbols", {}), live.get("symbols", {})
    differ = [name for name in sorted(set(rs) | set(ls)) if rs.get(name) != ls.get(name)]
    for name in differ[:10]:
        a, b = rs.get(name) or {}, ls.get(name) or {}
        fields = [f"{k} {a.get(k)} vs {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        diffs.append(f"symbol {name:12s} " + ", ".join(fields))
    if len(differ) > 10:
        diffs.append(f"... and {len(differ) - 10} more symbols differ")
    for table in TABLES:
        if _digest(replay_dir / table) != _digest(live_dir / table):
            diffs.append(f"{table:20s} rows differ (compare {replay_dir / table} with {live_dir / table})")
    return [printable(line) for line in diffs]


def drop_lines(live: dict) -> list[str]:
    cap = live.get("capture", {})
    drops = cap.get("drops", {})
    lines = ["drops by source: " + ", ".join(f"{k} {v:,}" for k, v in drops.items())]
    if cap.get("xdp_counters"):
        lines.append("xdp program: " + ", ".join(f"{k} {v:,}" for k, v in cap["xdp_counters"].items()))
    if cap.get("ring_counters"):
        lines.append("ring: " + ", ".join(f"{k} {v:,}" for k, v in cap["ring_counters"].items()))
    return lines
