"""The decoder both drivers use: the kernels' state, and the hand-off of finished rows to a sink.

``Decoder`` owns the session layer, the books, the output buffers, the counters and the VWAP fold.  Where the
frames come from is the driver's business: ``replay.engine.Replay`` walks files, ``capture.engine.Capture``
hands it to the ring kernels.  Both call ``flush()`` when a buffer fills (or a tick passes) and
``finish_stream()`` at the end, so a live capture and a replay of its recording write the same rows.

A sink takes finished rows: ``bbo(rows, n, sym)``, ``trades(tape, n, sym)``, ``vwap(rows, n, sym, last)``,
``messages(msgs, meta, n, mold)``, ``packets(rows, n, mold)``, ``gaps(rows, n)`` (session, first, last missing:
the decoder also keeps them for the summary), ``close()`` (``replay.output.CsvSink`` writes
files; ``replay.writer.BackgroundSink`` puts a thread in front of one in replay; ``cold.rows.Publisher`` hands
a capture's rows to the shared row rings).  The arrays
are the decoder's buffers, valid only during the call: a sink that keeps rows copies them.  ``vwap(..., last=
True)`` is the end of input, also when the decoder folds no windows itself (``Options.vwap`` False: the sink
folds them from the trade tape).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.decode import state as S
from appliance.decode.vwap import NEED_MORE as VWAP_DONE, feed_trades, finish_windows, new_vwap
from appliance.decode.walk import finish
from appliance.errors import UserError


@dataclass
class Options:
    feeds: list[tuple[int, int]] | None = None
    messages: bool = False
    packets: bool = False
    order_capacity: int = S.DEFAULT_ORDER_CAPACITY
    level_pool: int = S.DEFAULT_LEVEL_POOL
    window_ns: int = 1_000_000_000
    step_ns: int = 100_000_000
    vwap: bool = True                    # False: no VWAP windows here (the tape and totals are still kept)


@dataclass
class Result:
    sources: list = field(default_factory=list)        # replay.inputs.Source of each input, in order
    input_errors: list[str] = field(default_factory=list)
    gaps: list[tuple[int, int, int]] = field(default_factory=list)
    broken: list[int] = field(default_factory=list)
    seconds: float = 0.0


class VwapFold:
    """VWAP windows folded from the trade tape and handed to a sink: the one fold, wherever it runs (the
    decoder's thread in replay, the writer thread in a capture).  ``cnt`` receives ``vwap_late_trades``."""

    def __init__(self, window_ns: int, step_ns: int, cnt: np.ndarray):
        self.vw = new_vwap(window_ns, step_ns)
        self.cnt = cnt

    def feed(self, tape: np.ndarray, rows: int, sink, sym: np.ndarray) -> None:
        """Fold ``rows`` tape rows, handing windows to ``sink`` as they are finished (the tape is read before
        its buffer is reused)."""
        r = 0
        while True:
            r, status = feed_trades(tape, r, rows, self.vw, self.cnt)
            self._drain(sink, sym, False)
            if status == VWAP_DONE:
                return

    def finish(self, sink, sym: np.ndarray) -> None:
        """End of input: the windows up to the one holding the latest message."""
        while not finish_windows(self.vw):
            self._drain(sink, sym, False)
        self._drain(sink, sym, True)

    def _drain(self, sink, sym: np.ndarray, last: bool) -> None:
        sink.vwap(self.vw.rows, int(self.vw.n[0]), sym, last)
        self.vw.n[0] = 0


class Decoder:
    """The decode state of one stream and its output; ``sink`` receives finished rows (None: a test's or
    ``warm()``'s decoder that never flushes)."""

    def __init__(self, options: Options, sink):
        self.options = options
        self.sink = sink
        try:
            self.book = S.new_book(options.order_capacity, options.level_pool)
        except (MemoryError, ValueError):
            orders_b, levels_b = S.table_bytes(options.order_capacity, options.level_pool)
            raise UserError(f"not enough memory for the tables: --order-capacity {options.order_capacity:,} "
                            f"reserves {orders_b / 2**20:,.0f} MiB and --level-pool {options.level_pool:,} "
                            f"{levels_b / 2**20:,.0f} MiB; lower them") from None
        self.mold = S.new_mold(options.feeds)
        self.out = S.new_out(options.messages, options.packets, options.step_ns, options.window_ns)
        self.cnt, self.by_type = S.new_counters()
        self.state = S.Decode(self.mold, self.book, self.out, self.cnt, self.by_type)     # what the kernels take
        self.fold = VwapFold(options.window_ns, options.step_ns, self.cnt) if options.vwap else None
        self.result = Result()

    def adopt(self, **arrays) -> None:
        """Keep the named tables (``sym``, ``ln_group``, ...) in the given arrays from now on -- the capture's
        shared memory, where consumers read them -- with their current contents copied in."""
        for table in ("book", "mold"):
            t = getattr(self, table)
            mine = {k: a for k, a in arrays.items() if k in t._fields}
            for k, a in mine.items():
                a[...] = getattr(t, k)
            setattr(self, table, t._replace(**mine))
        for name in ("cnt", "by_type"):                     # the counters, e.g. for a metrics reader
            if name in arrays:
                arrays[name][...] = getattr(self, name)
                setattr(self, name, arrays[name])
        if self.fold is not None:
            self.fold.cnt = self.cnt
        self.state = S.Decode(self.mold, self.book, self.out, self.cnt, self.by_type)

    def tables(self) -> list:
        """Every state table (named tuples of arrays), e.g. to make them resident before a capture starts."""
        return [self.book, self.mold, self.out] + ([self.fold.vw] if self.fold else [])

    def flush(self) -> None:
        """Hand every finished row to the sink and empty the buffers (the kernels then resume)."""
        out, n, sym = self.out, self.out.n, self.book.sym
        if n[S.N_TRADES] and self.fold is not None:
            self.fold.feed(out.trades, int(n[S.N_TRADES]), self.sink, sym)
        self.sink.bbo(out.bbo, int(n[S.N_BBO]), sym)
        self.sink.trades(out.trades, int(n[S.N_TRADES]), sym)
        if n[S.N_MSGS]:
            self.sink.messages(out.msgs, out.msg_meta, int(n[S.N_MSGS]), self.mold)
        if n[S.N_PACKETS]:
            self.sink.packets(out.packets, int(n[S.N_PACKETS]), self.mold)
        if n[S.N_GAPS]:
            self.sink.gaps(out.gaps, int(n[S.N_GAPS]))
        for i in range(int(n[S.N_GAPS])):
            self.result.gaps.append(tuple(int(v) for v in out.gaps[i]))
        self.result.broken.extend(int(v) for v in out.broken[:n[S.N_BROKEN]])
        n[:S.FLAG_PACKETS] = 0

    def finish_stream(self) -> None:
        """End of all input (or of a live capture): give up on held holes, write every remaining row and window."""
        while not finish(self.state):
            self.flush()
        self.flush()
        if self.fold is not None:
            self.fold.finish(self.sink, self.book.sym)
        else:
            # The windows are folded elsewhere (a capture's consumers, from the tape): this is the end of input.
            self.sink.vwap(np.zeros((0, 5), np.int64), 0, self.book.sym, True)
