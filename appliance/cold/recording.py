"""The recording process: the cold-side consumer that writes the shared frame ring to pcap files.

A process of its own (``python -m appliance.cold.recording``), started by the capture when it records, so the
disk never shares a thread, a GIL or a time slice with the receive loop.  The hot side appends every feed frame
to the region's frame ring as a pcap record and publishes the head (``ring.deliver._record``); this process
writes the bytes between its tail and the head with ``capture.record.Recorder`` (rotation, retention by count,
whole records after a failed write) and then releases the new tail, which is what gives the hot side room.  The
ring is single-producer, single-consumer and never overwritten: when this process has not made room, the hot
side counts the frame as not recorded (``CAP_REC_DROPPED``) and goes on.

It looks every ``POLL_MS`` (at once again while a pass moved ``BEHIND_BYTES`` or more), ignores SIGINT and
SIGTERM (the capture decides when to stop), and ends like the output process (``cold.output``):

* normal end: the capture sets ``STATE_FINISHED`` once the last frame is in the ring; the process writes the
  rest, closes the file, reports its counts (``done JSON`` on the status pipe) and exits 0;
* the capture dies: the life pipe hangs up; the process writes every record published (the head is released
  only after a whole record), closes the file, says so in one sentence and exits 1;
* the process dies: the capture says so in one sentence and goes on; from then on frames are counted as not
  recorded (with those the ring still held), and the capture exits 1.  A new process would open a new file
  at the next whole record, but the hole would be the same: the capture does not restart it.

Its counts are also kept live in its line of the frame ring's control block (``RS_*``), so they survive it.
"""
from __future__ import annotations

import json
import os
import select
import sys

from appliance.cold.output import ColdProcess, child_start, refuse
from appliance.cold.rows import CS_CURSOR, CS_DELIVERED, CS_LOST, CS_OWN, CS_PID, H_PRODUCER_PID, STATE_FINISHED, \
    Region
from appliance.errors import UserError
from appliance.ring.deliver import REC_HEAD, REC_TAIL

POLL_MS = 20                      # frames wait at most this long in the ring (plus the write)
BEHIND_BYTES = 4 << 20            # a pass that wrote this much goes again at once

# The recorder's line of the frame ring's control block (fctl[8:16]): its tail and its counts.
LINE = REC_TAIL - CS_CURSOR
RS_TAIL, RS_RECORDS_DROPPED, RS_PID, RS_BYTES_WRITTEN = (LINE + CS_CURSOR, LINE + CS_LOST, LINE + CS_PID,
                                                         LINE + CS_DELIVERED)
RS_WRITE_ERRORS, RS_FILES_OPENED, RS_FILES_REMOVED, RS_BYTES_DROPPED = range(LINE + CS_OWN, LINE + CS_OWN + 4)
_WORDS = {"records_dropped": RS_RECORDS_DROPPED, "bytes_written": RS_BYTES_WRITTEN, "write_errors": RS_WRITE_ERRORS,
          "files_opened": RS_FILES_OPENED, "files_removed": RS_FILES_REMOVED, "bytes_dropped": RS_BYTES_DROPPED}


def pieces(ring, tail: int, head: int) -> list:
    """The ring's bytes from ``tail`` to ``head`` (positions counted from the start, not wrapped), in order:
    one view, or two when they wrap at the ring's end."""
    size = len(ring)
    at, n = tail & (size - 1), head - tail
    first = min(n, size - at)
    return [ring[at:at + first]] + ([ring[:n - first]] if first < n else [])


class RecordingProcess(ColdProcess):
    """The capture's handle on its recording process."""

    module = "appliance.cold.recording"
    what = "recording process"
    lost = ("frames from now on are counted as not recorded (the capture goes on: books, tables and summary.json "
            "are complete)")

    def __init__(self, region: Region, directory: str, rotate_bytes: int | None, rotate_seconds: float | None,
                 max_files: int | None, snaplen: int):
        super().__init__(region, {"dir": str(directory), "rotate_bytes": rotate_bytes,
                                  "rotate_seconds": rotate_seconds, "max_files": max_files, "snaplen": snaplen})

    def result(self) -> dict:
        """The recorder's counts once the process ended: what it reported, or (it died) what its line holds, with
        the records it never wrote counted as dropped."""
        for line in self.reports:
            if line.startswith("done "):
                return json.loads(line[len("done "):])
        ctl = self.region.fctl
        stats = {name: int(ctl[w]) for name, w in _WORDS.items()}
        tail, head = int(ctl[RS_TAIL]), int(ctl[REC_HEAD])
        from appliance.capture.record import count_records

        stats["records_dropped"] += count_records(pieces(self.region.frames, tail, head))
        stats["bytes_dropped"] += head - tail
        stats["last_error"] = self.ended or "the recording process ended early"
        return stats


# -- in the recording process ---------------------------------------------------------------------------------
def drain(region: Region, rec, life_fd: int) -> str:
    """Write the ring to ``rec`` until the producer finished ("finished") or went away ("producer_gone")."""
    ctl, ring = region.fctl, region.frames
    poller = select.poll()
    poller.register(life_fd, select.POLLIN)
    gone = False
    while True:
        finished = region.state == STATE_FINISHED       # read before the head: every frame is in by then
        head, tail = int(ctl[REC_HEAD]), int(ctl[RS_TAIL])
        if head > tail:
            rec.write(pieces(ring, tail, head))
            ctl[RS_TAIL] = head           # x86 keeps the write()'s loads of the ring before this store
            _publish(ctl, rec.stats)
            if head - tail >= BEHIND_BYTES:
                continue
        elif finished:
            return "finished"
        elif gone:
            return "producer_gone"
        if not gone and poller.poll(POLL_MS):
            gone = True                                  # EOF or POLLHUP: the capture process ended


def _publish(ctl, stats: dict) -> None:
    for name, w in _WORDS.items():
        ctl[w] = stats[name]


def main(argv: list[str]) -> int:
    spec, status, region = child_start(argv)
    from appliance.capture.record import Recorder

    try:
        rec = Recorder(spec["dir"], rotate_bytes=spec["rotate_bytes"], rotate_seconds=spec["rotate_seconds"],
                       max_files=spec["max_files"], snaplen=spec["snaplen"])
    except UserError as err:
        return refuse(status, err)
    region.fctl[RS_PID] = os.getpid()
    status.write("ready\n")
    status.flush()
    how = drain(region, rec, spec["life_fd"])
    rec.close()
    _publish(region.fctl, rec.stats)
    if how == "finished":
        status.write(f"done {json.dumps(rec.stats)}\n")
    status.close()                    # a gone capture reads no report: writing one would die of EPIPE
    if how == "producer_gone":
        print(f"appliance: recording process: the capture (pid {region.header[H_PRODUCER_PID]}) ended without "
              f"finishing; the recording in {spec['dir']} holds every frame it published "
              f"({rec.stats['bytes_written']:,} bytes)", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
