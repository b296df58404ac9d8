"""Output rows written on a thread of their own: replay's decoding never waits for formatting, and the two
overlap on two cores (the decode and formatting kernels release the GIL).

``BackgroundSink`` stands in front of the real sink (``replay.output.CsvSink``) and is itself a sink (the one
interface, ``replay.decoder``): each call copies the finished rows (and the few state arrays the writer reads:
symbol names, session names, lines) and queues them; a writer thread hands them to the real sink in order.  A
day's decoding and its 0.9 GB of CSV text take about the same time; pipelined, a replay takes about the longer
of the two instead of their sum (README, Replay).  A live capture does not use it: its rows go into shared
row rings and its own output process (``appliance.cold``).

The VWAP windows are folded on the writer thread too (``fold``, a ``replay.decoder.VwapFold``, with the
decoder's own fold off): the fold reads the trade tape the writer is handed anyway, so the decoding thread,
the longer side of a replay with its tables, keeps only the decoding.

Full queue (the disk or the CPU cannot keep up): the decoding thread waits for room -- the input simply waits.
The waits are counted (``output_waits``, ``output_wait_seconds``).  Rows are never dropped here.  Memory is
bounded: at most ``depth`` queued calls, each one buffer's rows (the largest, --messages: 65,536 x 80 bytes =
5.2 MB; top of book 3.7 MB) plus a 0.5 MB copy of the symbol names -- about 46 MB at the default depth of 8,
and one call more being written.
"""
from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace

from appliance.errors import UserError

QUEUE_DEPTH = 8


def _names(mold) -> SimpleNamespace:
    """What the writers read from the session layer (lines and session names), as of now."""
    return SimpleNamespace(ln_group=mold.ln_group.copy(), ln_port=mold.ln_port.copy(), ln_meta=mold.ln_meta.copy(),
                           ss_meta=mold.ss_meta.copy(), ss_name=mold.ss_name.copy())


class BackgroundSink:
    def __init__(self, sink, depth: int = QUEUE_DEPTH, fail_fast: bool = False, fold=None):
        """``fail_fast``: a failed write is raised by the next call (replay stops decoding: its run is
        discarded); otherwise only by ``drain``.  ``fold``: fold the VWAP windows from the trades here (the
        decoder then folds none: ``Options.vwap`` False); its ``cnt`` gets ``vwap_late_trades``."""
        self.sink = sink
        self.fold = fold
        self.fail_fast = fail_fast
        self.dir = sink.dir
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.waits = 0
        self.wait_seconds = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="appliance-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                name, args = item
                try:
                    if name == "trades" and self.fold is not None:
                        self.fold.feed(args[0], args[1], self.sink, args[2])    # windows before their trades
                    if name == "vwap" and self.fold is not None:
                        self.fold.finish(self.sink, args[2])                    # the end of input
                    else:
                        getattr(self.sink, name)(*args)
                except BaseException as err:          # kept, and raised in the decoding thread by drain()
                    self.error = err

    def _put(self, name: str, *args) -> None:
        if self.fail_fast and self.error is not None:
            self.drain()
        try:
            self.queue.put_nowait((name, args))
        except queue.Full:
            started = time.perf_counter()
            self.queue.put((name, args))
            self.waits += 1
            self.wait_seconds += time.perf_counter() - started

    def bbo(self, rows, n, sym):
        if n:
            self._put("bbo", rows[:n].copy(), n, sym.copy())

    def trades(self, rows, n, sym):
        if n:
            self._put("trades", rows[:n].copy(), n, sym.copy())

    def vwap(self, rows, n, sym, last):
        if n or last:
            self._put("vwap", rows[:n].copy(), n, sym.copy(), last)

    def messages(self, msgs, meta, n, mold):
        self._put("messages", msgs[:n].copy(), meta[:n].copy(), n, _names(mold))

    def packets(self, rows, n, mold):
        self._put("packets", rows[:n].copy(), n, _names(mold))

    def gaps(self, rows, n):
        pass                              # the file sinks list no gaps (summary.json does)

    def drain(self) -> None:
        """Wait until every queued row is written; raise what the writer hit, if anything."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if isinstance(self.error, OSError):
            raise UserError(f"writing the output rows to {self.dir} failed: "
                            f"{self.error.strerror or self.error}") from self.error
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Write every queued row, then close the real sink (its files, even after a failure); the first failure
        is raised."""
        failed = None
        try:
            self.drain()
        except BaseException as err:
            failed = err
        try:
            self.sink.close()
        except BaseException as err:
            failed = failed or err
        if failed is not None:
            raise failed

    def stats(self) -> dict:
        return {"output_waits": self.waits, "output_wait_seconds": round(self.wait_seconds, 3)}
