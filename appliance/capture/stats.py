"""Capture statistics: where frames were lost, and how long they took from the wire to the book.

Drops are attributed to the place that counted them:

* ``kernel``: the interface's own counters (``/sys/class/net/IF/statistics``: rx_dropped, rx_missed_errors,
  rx_fifo_errors) -- the NIC or the stack lost the frame before any socket saw it;
* ``xdp``: frames our XDP program matched but could not redirect (no socket on that queue, redirect failed);
* ``socket``: AF_XDP ``XDP_STATISTICS`` rx_dropped (no fill-ring chunk for the frame) and rx_ring_full;
* ``ring``: TPACKET ``PACKET_STATISTICS`` tp_drops (no free block, V3, or frame slot, V2);
* ``recording``: frames decoded but not recorded (the decode is unaffected): the frame ring had no room because
  the recording process was behind (or had died), or a write failed (ENOSPC, EFBIG, EIO) and its run of
  records was dropped.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from appliance.cold import rows as R

from appliance.ring.deliver import CAP_LAT_MAX, CAP_NAMES, CAP_REC_DROPPED, HIST_SIZE, \
    bucket_floor

IFACE_DROPS = ("rx_dropped", "rx_missed_errors", "rx_fifo_errors")


def iface_counters(ifname: str) -> dict[str, int]:
    out = {}
    for name in IFACE_DROPS + ("rx_packets",):
        try:
            out[name] = int(Path(f"/sys/class/net/{ifname}/statistics/{name}").read_text())
        except (OSError, ValueError):
            out[name] = 0
    return out


def latency(hist: np.ndarray, cap: np.ndarray) -> dict:
    """Receive-to-book percentiles (ns) from the log-linear histogram: each is the upper edge of its bucket,
    so within 1.6% above the true value; ``max`` is exact."""
    total = int(hist.sum())
    if total == 0:
        return {"samples": 0}
    cum = np.cumsum(hist)
    out = {"samples": total}
    for label, q in (("p50_ns", 0.5), ("p99_ns", 0.99), ("p99_9_ns", 0.999)):
        i = int(np.searchsorted(cum, q * total, side="left"))
        out[label] = bucket_floor(i + 1) - 1 if i + 1 < HIST_SIZE else int(cap[CAP_LAT_MAX])
        out[label] = min(out[label], int(cap[CAP_LAT_MAX]))
    out["max_ns"] = int(cap[CAP_LAT_MAX])
    return out


def _ring_stats(capture, rings) -> dict:
    return rings[0].stats() if rings else {}


def live_drops(capture) -> int:
    """Drops visible without system calls that reset anything (for the status line)."""
    rings = getattr(capture, "rings", [])
    total = 0
    if not rings:
        return total
    ring = _ring_stats(capture, rings)
    total += ring.get("ring_drops", 0) + ring.get("rx_dropped", 0) + ring.get("rx_ring_full", 0)
    prog = getattr(capture, "program", None)
    if prog is not None:
        c = prog.counters()
        total += c.get("no_socket", 0) + c.get("redirect_failed", 0)
    return total


class DropsBySource:
    """A live capture's drops by where they were counted, read while it runs (``xdp``: the steering program's
    no-socket and failed redirects; ``socket``: AF_XDP rx_dropped + rx_ring_full; ``ring``: TPACKET tp_drops).
    Counters never go back: once the rings or the program are gone, the last values read stay."""

    def __init__(self, capture):
        self.capture, self.last = capture, {}

    def __call__(self) -> dict[str, int]:
        final = (getattr(self.capture, "stats", None) or {}).get("drops")
        if final:                                 # the capture ended: its summary's figures, read as it closed
            now = {k: v for k, v in final.items() if k in ("xdp", "socket", "ring")}
        else:
            now = self._live()
        for source, value in now.items():
            self.last[source] = max(self.last.get(source, 0), int(value))
        return dict(self.last)

    def _live(self) -> dict[str, int]:
        now = {}
        try:
            rings = getattr(self.capture, "rings", None) or []
            if rings:
                st = rings[0].stats()
                if self.capture.options.engine == "tpacket":
                    now["ring"] = st.get("ring_drops", 0)
                else:
                    now["socket"] = st.get("rx_dropped", 0) + st.get("rx_ring_full", 0)
            prog = getattr(self.capture, "program", None)
            if prog is not None:
                c = prog.counters()
                now["xdp"] = c.get("no_socket", 0) + c.get("redirect_failed", 0)
        except Exception:                         # noqa: BLE001 -- closed under us (the capture ending: sockets
            pass                                  # and maps gone, libbpf's error): keep what was last read
        return now


def collect(capture, rings, iface_before: dict[str, int]) -> dict:
    """Everything ``summary.json`` says about the capture itself (called before the rings close)."""
    after = iface_counters(capture.options.iface)
    kernel = {k: after[k] - iface_before.get(k, 0) for k in IFACE_DROPS}
    ring = _ring_stats(capture, rings)
    drops = {"kernel": sum(kernel.values())}
    out = {**capture.ring_info, "interface": capture.options.iface, "stop_reason": capture.stop_reason,
           "interface_counters": kernel, "ring_counters": ring}
    prog = getattr(capture, "program", None)
    if prog is not None:
        xdp = prog.counters()
        out["xdp_counters"] = xdp
        drops["xdp"] = xdp.get("no_socket", 0) + xdp.get("redirect_failed", 0)
        drops["socket"] = ring.get("rx_dropped", 0) + ring.get("rx_ring_full", 0)
    else:
        drops["ring"] = ring.get("ring_drops", 0)
    drops["recording"] = int(capture.cap[CAP_REC_DROPPED])     # write failures are added once the recorder ended
    out["drops"] = drops
    out["counters"] = {name: int(capture.cap[i]) for i, name in CAP_NAMES.items()}
    out["latency"] = latency(capture.hist, capture.cap)
    out["latency"]["clock"] = ("XDP program bpf_ktime_get_ns (CLOCK_MONOTONIC) to book updated"
                               if capture.options.engine == "xdp"
                               else "kernel socket timestamp (CLOCK_REALTIME, includes block retire wait) "
                                    "to book updated" if capture.options.tpacket_version == 3
                               else "kernel socket timestamp (CLOCK_REALTIME) to book updated")
    return out


def add_recording(stats: dict, rec_stats: dict) -> None:
    """File the recorder's totals (read after it ended, so every record was written or dropped): records a
    failed write dropped are lost recording as surely as those the frame ring had no room for."""
    stats["recording"] = rec_stats
    stats["drops"]["recording"] += int(rec_stats.get("records_dropped", 0))


def recording_lost(stats: dict) -> str | None:
    """One sentence when the recording is incomplete, else None."""
    lost = stats.get("drops", {}).get("recording", 0)
    if not lost:
        return None
    rec = stats.get("recording") or {}
    why = f"last error: {rec['last_error']}" if rec.get("last_error") else "the recording process fell behind"
    return f"{lost:,} frames were decoded but not recorded ({why}); the recording is incomplete"





def describe(info: dict) -> str:
    if info.get("engine") == "xdp":
        return (f"AF_XDP, {info['attach_mode']} XDP, {'zero-copy' if info['zerocopy'] else 'copy mode'}, "
                f"queues {','.join(map(str, info['queues']))}")
    if info.get("tpacket_version") == 2:
        return (f"TPACKET_V2, {info['blocks'] * (info['block_size'] // info['frame_size'])} slots of "
                f"{info['frame_size']} bytes")
    return f"TPACKET_V3, {info['blocks']} x {info['block_size'] >> 10} KiB blocks"


def status_line(stream=sys.stderr):
    """A live one-line status for a terminal: packets/s, messages/s, drops, gaps (redrawn every 0.5 s)."""
    state = {"t": time.monotonic(), "frames": 0, "messages": 0}

    def show(capture) -> None:
        now = time.monotonic()
        if now - state["t"] < 0.5:
            return
        c = capture.counters()
        dt = now - state["t"]
        pps = (c["frames"] - state["frames"]) / dt
        mps = (c["messages"] - state["messages"]) / dt
        state.update(t=now, frames=c["frames"], messages=c["messages"])
        drops = live_drops(capture)
        stream.write(f"\r{pps:>10,.0f} pkt/s {mps:>12,.0f} msg/s  frames {c['frames']:,}  "
                     f"drops {drops:,}  gaps {c['gaps']:,}   ")
        stream.flush()

    return show


def output_stats(capture) -> dict:
    """summary.json's ``capture.output``: rows published per ring, and per consumer (the output process is slot
    0) the rows it was handed and the rows it lost because it fell more than a ring behind."""
    region = capture.region
    if region is None:
        return {}
    out = {"ring_rows": {R.RING_NAMES[r]: region.rows[r] for r in range(R.N_RINGS) if region.rows[r]},
           "published": {R.RING_NAMES[r]: region.published(r) for r in range(R.N_RINGS) if region.rows[r]},
           "consumers": {}}
    for slot, info in region.consumers().items():
        name = "tables" if slot == R.FILES_SLOT and capture.output is not None else f"slot{slot}"
        out["consumers"][name] = info
    if capture.output is not None:
        out["process"] = {"pid": capture.output.pid, "exit_status": capture.output_code,
                          "ended_early": capture.output.ended}
    out["rows_lost"] = sum(ring["lost"] for info in region.consumers().values() for ring in info["rings"].values())
    return out
