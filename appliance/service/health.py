"""Health and readiness of a capture, judged from its shared region and its process.

* alive (``healthz``): the region is attached, the capture's process runs, it has not finished, and its receive
  loop turns -- frames taken or empty polls counted (the loop counts one every time it returns idle, at least
  every 250 ms) within ``stall`` seconds;
* ready (``readyz``): alive, the feed was heard within ``stale`` seconds, and no attached consumer of the row
  rings is losing rows (its loss count grew within ``stale`` seconds) or is close to it (more than
  ``SATURATED`` of a ring behind).

"Heard": the region keeps the capture time of the last feed frame on any line (the decoder's
``last_frame_ns``), not per line -- the per-line packet counts and times stay in the capture's private
memory.  So readiness here is "the feed", not "every line"; ``ServiceMetrics.line_heard`` is where the service
will put per-line times once the capture hands them out.

``sample()`` must be called regularly (the owner's loop, every 0.1-0.5 s): movement is judged between samples.
"""
from __future__ import annotations

import threading
import time

import psutil

from appliance.cold import rows as R
from appliance.decode import counters as C
from appliance.ring.deliver import CAP_FRAMES, CAP_WAKEUPS

SATURATED = 0.9


def process_running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class CaptureHealth:
    def __init__(self, region: R.Region, pid: int, stale: float = 5.0, stall: float = 2.0,
                 clock=time.monotonic, wall=time.time):
        self.region, self.pid, self.stale, self.stall = region, pid, stale, stall
        self.clock, self.wall = clock, wall
        self.lock = threading.Lock()
        self.turns = -1
        self.turned_at = clock()
        self.lost: dict[tuple[int, int], int] = {}
        self.lost_at: dict[tuple[int, int], float] = {}

    def sample(self) -> None:
        """Note whether the loop turned and which consumers lost rows since the last sample."""
        now = self.clock()
        region = self.region
        turns = int(region.cap[CAP_FRAMES]) + int(region.cap[CAP_WAKEUPS])
        with self.lock:
            if turns != self.turns:
                self.turns, self.turned_at = turns, now
            for slot, info in region.consumers().items():
                for ring, counts in info["rings"].items():
                    key = (R.RING_NAMES.index(ring), slot)
                    if counts["lost"] > self.lost.get(key, 0):
                        self.lost_at[key] = now
                    self.lost[key] = counts["lost"]

    def healthz(self) -> tuple[bool, dict]:
        reasons = {"region": "attached"}
        ok = True
        if not process_running(self.pid):
            ok, reasons["producer"] = False, f"the capture (pid {self.pid}) is not running"
        else:
            reasons["producer"] = f"pid {self.pid} running"
        if self.region.state == R.STATE_FINISHED:
            ok, reasons["state"] = False, "the capture has finished"
        with self.lock:
            idle = self.clock() - self.turned_at
        if idle > self.stall:
            ok, reasons["loop"] = False, f"the receive loop has not turned for {idle:.1f} s"
        else:
            reasons["loop"] = "turning"
        return ok, reasons

    def readyz(self) -> tuple[bool, dict]:
        ok, reasons = self.healthz()
        last_ns = int(self.region.cnt[C.LAST_FRAME_NS])
        if last_ns == 0:
            ok, reasons["feed"] = False, "no feed frame yet"
        else:
            quiet = self.wall() - last_ns / 1e9
            if quiet > self.stale:
                ok, reasons["feed"] = False, f"no feed frame for {quiet:.1f} s (more than {self.stale:g} s)"
            else:
                reasons["feed"] = f"last frame {max(quiet, 0.0):.1f} s ago"
        reasons["rings"] = self._rings()
        if reasons["rings"] != "no consumer losing rows":
            ok = False
        return ok, reasons

    def _rings(self) -> str | dict:
        region, now, bad = self.region, self.clock(), {}
        with self.lock:
            lost_at = dict(self.lost_at)
        for slot, info in region.consumers().items():
            if not info["attached"]:
                continue
            for r in range(R.N_RINGS):
                if not region.rows[r]:
                    continue
                name = f"{R.RING_NAMES[r]}/slot{slot}"
                behind = region.published(r) - int(region.consumer(r, slot)[R.CS_CURSOR])
                if now - lost_at.get((r, slot), -1e18) <= self.stale:
                    bad[name] = f"lost rows within the last {self.stale:g} s"
                elif behind > SATURATED * region.rows[r]:
                    bad[name] = f"{behind} of {region.rows[r]} rows behind"
        return bad or "no consumer losing rows"
