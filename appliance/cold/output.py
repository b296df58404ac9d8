"""The output process: the capture's first consumer, which writes the table files from the row rings.

A process of its own (``python -m appliance.cold.output``), started by the capture with the region's memfd,
so formatting and writing CSV never share an interpreter, a GIL or a time slice with the receive loop.  It
reads every ring with its own cursor (``rows.Reader``, slot ``FILES_SLOT``), folds the VWAP windows from the
tape, and hands rows to the same sink replay uses (``replay.output.CsvSink``), so a capture's tables and a
replay's are written by one code path.  Any later consumer (a publisher, a metrics exporter, another format)
is the same loop around its own sink, in its own process, with its own slot.

Lifecycle, through the two pipes and the region's state word (no signals):

* start: the process maps the region, opens the files, says ``ready`` (or one sentence and exit 2, e.g. an
  output directory it cannot write) on its status pipe;
* run: it takes what the rings hold every ``POLL_MS`` -- at once again while it is behind (a pass moved
  ``BEHIND_ROWS`` or more), so a backlog is worked off in large batches while a consumer keeping up wakes 200
  times a second, not once per frame (measured: taking every few frames' rows as they came cost the process
  about 6 us of CPU per frame at 50k frames/s, in Python's per-pass overhead); it ignores SIGINT/SIGTERM (the
  capture decides when to stop, and a Ctrl-C reaches the whole process group);
* normal end: the capture publishes its last rows and sets ``STATE_FINISHED``; the process drains every ring,
  writes the last VWAP windows, closes the files, records its counts in its slot and exits 0;
* the capture dies (SIGKILL, a crash): the life pipe hangs up; the process drains what was published (every
  row below a ring's ``seq`` is whole), closes the files, says so in one sentence and exits 1;
* the process dies: the capture sees it exit (``OutputProcess.check``), says so in one sentence and goes on
  receiving -- books, summary.json and the recording are the hot side's -- and exits 1 at the end, because
  the tables stop where the process died.  It does not restart it (a restarted writer would have to start new
  files at a row boundary it cannot know); ``appliance replay`` of the recording rebuilds the tables.
* a failed write (a full disk): the same as dying, with the file and the reason in the sentence.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from appliance.cold.rows import BBO, CS_CURSOR, CS_OWN, GAPS, H_PRODUCER_PID, MESSAGES, N_RINGS, PACKETS, STATE_FINISHED, TAPE, \
    FILES_SLOT, Reader, Region
from appliance.errors import RunFailed, UserError

POLL_MS = 20                     # sleep between passes unless behind: rows wait at most this long to be written
BEHIND_ROWS = 4096               # a pass that moved this many rows goes again at once

READY_TIMEOUT = 600              # seconds for the process to start (a cold numba cache compiles the formatters)
CS_VWAP_LATE = CS_OWN            # word of the files slot's tape line: trades older than windows already written


class ColdProcess:
    """The capture's handle on one process of its cold side (``python -m MODULE SPEC``): the life pipe it watches,
    the status pipe it answers on ("ready", "error SENTENCE", and whatever else it reports before exiting)."""

    module = ""
    what = "a cold-side process"
    lost = ""                                 # what the capture no longer gets once the process has died

    def __init__(self, region: Region, spec: dict):
        self.region = region
        self.spec = dict(spec, region_fd=region.fd)
        self.proc: subprocess.Popen | None = None
        self.life_w: int | None = None        # held open while we live; the process sees it hang up
        self.status = None                    # its status pipe
        self.ended: str | None = None         # the sentence once it ended on its own
        self.reports: list[str] = []          # status lines after "ready"

    def start(self) -> None:
        life_r, self.life_w = os.pipe()
        status_r, status_w = os.pipe()
        self.spec.update(life_fd=life_r, status_fd=status_w)
        root = str(Path(__file__).resolve().parent.parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module, json.dumps(self.spec)],
                                         pass_fds=(self.region.fd, life_r, status_w), env=env,
                                         stdin=subprocess.DEVNULL)
        finally:
            os.close(life_r)
            os.close(status_w)
        self.status = os.fdopen(status_r, "r")

    def wait_ready(self) -> None:
        """Until the process says it is ready; UserError with its sentence if it could not start."""
        ready, _, _ = select.select([self.status], [], [], READY_TIMEOUT)
        line = self.status.readline().strip() if ready else ""
        if line == "ready":
            return
        self.kill()
        if line.startswith("error "):
            raise UserError(line[len("error "):])
        raise RunFailed(f"the {self.what} did not start (exit status {self.proc.returncode})")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> str | None:
        """One sentence, once, if the process ended while the capture runs; else None."""
        if self.ended is None and self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            self.ended = f"the {self.what} (pid {self.proc.pid}) {how}; {self.lost}"
            return self.ended
        return None

    def finish(self) -> int:
        """Every row and frame is published: let the process drain, write and close; its exit status."""
        self.region.set_state(STATE_FINISHED)
        code = self.proc.wait()
        if self.status is not None:
            self.reports = [line.strip() for line in self.status.readlines() if line.strip()]
        self._close_pipes()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.life_w is not None:
            os.close(self.life_w)             # the process's life pipe: closing it is what a crash would do
            self.life_w = None
        if self.status is not None:
            self.status.close()
            self.status = None


class OutputProcess(ColdProcess):
    """The capture's handle on its output process (the table files)."""

    module = "appliance.cold.output"
    what = "output process"
    lost = ("the tables stop at the rows it wrote (the capture goes on: books, summary.json and any recording are "
            "complete)")

    def __init__(self, region: Region, out_dir: str, messages: bool, packets: bool, window_ns: int, step_ns: int,
                 delay_ms: float = 0.0):
        super().__init__(region, {"out": str(out_dir), "messages": messages, "packets": packets,
                                  "window_ns": window_ns, "step_ns": step_ns, "delay_ms": delay_ms})

    def vwap_late_trades(self) -> int:
        return int(self.region.consumer(TAPE, FILES_SLOT)[CS_VWAP_LATE])


# -- in the output process -------------------------------------------------------------------------------------
def drain_once(reader: Reader, sink, fold, names) -> int:
    """Hand every ring's next batch to ``sink``; the rows handed over.  VWAP windows are folded from the tape
    here (``fold``), before the tape's trades are written."""
    region = reader.region
    sym = region.sym
    moved = 0
    rows, _ = reader.take(BBO)
    if len(rows):
        sink.bbo(rows, len(rows), sym)
        moved += len(rows)
    rows, _ = reader.take(TAPE)
    if len(rows):
        if fold is not None:
            fold.feed(rows, len(rows), sink, sym)
        sink.trades(rows, len(rows), sym)
        moved += len(rows)
    rows, _ = reader.take(MESSAGES)
    if len(rows):
        meta = np.ascontiguousarray(rows[:, :2])
        msgs = np.ascontiguousarray(rows.view(np.uint8)[:, 16:])
        sink.messages(msgs, meta, len(rows), names)
        moved += len(rows)
    rows, _ = reader.take(PACKETS)
    if len(rows):
        sink.packets(rows, len(rows), names)
        moved += len(rows)
    rows, _ = reader.take(GAPS)
    if len(rows):
        sink.gaps(rows, len(rows))
        moved += len(rows)
    return moved


def warm_up(reader: Reader, sink, fold, messages: bool) -> None:
    """Load every formatting and folding kernel now, with the very argument types the rows will have, so loading
    them from numba's cache (about a second of CPU in all) happens before the capture starts, not at its first
    rows."""
    from appliance.decode.vwap import feed_trades
    from appliance.replay.csvfmt import format_messages

    sym = reader.region.sym
    sink.bbo_file.fmt(reader.buffers[BBO][:0], 0, sym, sink.bbo_file.text)
    tape = reader.buffers[TAPE][:0]
    sink.trades_file.fmt(tape, 0, sym, sink.trades_file.text)
    sink.vwap_file.fmt(fold.vw.rows[:0], 0, sym, sink.vwap_file.text)
    feed_trades(tape, 0, 0, fold.vw, fold.cnt)
    if messages:
        names, lengths = np.zeros((1, 10), np.uint8), np.zeros(1, np.int64)
        msgs = np.zeros((0, 64), np.uint8)
        format_messages(msgs, np.zeros((0, 2), np.int64), 0, sink.messages_file.fields, names, lengths,
                        sink.messages_file.text)


def caught_up(reader: Reader) -> bool:
    return all(reader.behind(r) == 0 for r in range(N_RINGS))


def consume(reader: Reader, sink, fold, life_fd: int, delay_ms: float = 0.0) -> str:
    """Drain the rings into ``sink`` until the producer finished ("finished") or went away ("producer_gone")."""
    region = reader.region
    names = region.names()
    poller = select.poll()
    poller.register(life_fd, select.POLLIN)
    gone = False
    while True:
        finished = region.state == STATE_FINISHED       # read before the rings: every row is published by then
        moved = drain_once(reader, sink, fold, names)
        if delay_ms:
            time.sleep(delay_ms / 1000)                  # the slow-consumer test hook (--slow-output-ms)
        if moved >= BEHIND_ROWS:
            continue                                     # a backlog: no sleep until it is worked off
        if finished and caught_up(reader):
            return "finished"
        if gone and caught_up(reader):
            return "producer_gone"
        if not gone and poller.poll(POLL_MS):
            gone = True                                  # EOF or POLLHUP: the capture process ended


def child_start(argv: list[str]) -> tuple[dict, object, Region]:
    """In a cold-side process: ignore SIGINT/SIGTERM (the capture decides when it ends), read the spec, open the
    status pipe, map the region."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    spec = json.loads(argv[0])
    return spec, os.fdopen(spec["status_fd"], "w"), Region.attach(spec["region_fd"])


def refuse(status, err: UserError) -> int:
    """Could not start: the sentence on the status pipe (the capture says it), exit 2."""
    status.write(f"error {err}\n")
    status.close()
    return 2


def main(argv: list[str]) -> int:
    spec, status, region = child_start(argv)
    from appliance.decode import counters as C
    from appliance.replay.decoder import VwapFold
    from appliance.replay.output import CsvSink, OutputFailed

    try:
        sink = CsvSink(spec["out"], spec["messages"], spec["packets"])
    except UserError as err:
        return refuse(status, err)
    reader = Reader(region, FILES_SLOT)
    late = np.zeros(C.SIZE, np.int64)
    fold = VwapFold(spec["window_ns"], spec["step_ns"], late)
    warm_up(reader, sink, fold, spec["messages"])
    status.write("ready\n")
    status.close()
    try:
        how = consume(reader, sink, fold, spec["life_fd"], spec["delay_ms"])
        fold.finish(sink, region.sym)
        sink.close()
    except OutputFailed as err:
        print(f"appliance: output process: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        region.consumer(TAPE, FILES_SLOT)[CS_VWAP_LATE] = late[C.VWAP_LATE_TRADES]
        reader.detach()
    if how == "producer_gone":
        written = ", ".join(f"{int(region.consumer(r, FILES_SLOT)[CS_CURSOR]):,} {name}"
                            for r, name in ((BBO, "top-of-book"), (TAPE, "tape")))
        print(f"appliance: output process: the capture (pid {region.header[H_PRODUCER_PID]}) ended without finishing; the tables in "
              f"{spec['out']} hold every row it published ({written} rows)", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
