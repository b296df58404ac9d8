"""The replay driver: hands chunks of input to the walker kernels and drains their output buffers.

Python runs once per chunk of input or per full output buffer, never per packet: the kernels walk the
buffered bytes, and this module only moves finished rows to the writers and keeps score.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from appliance.decode import counters as C
from appliance.decode import state as S
from appliance.decode.vwap import NEED_MORE as VWAP_DONE, feed_trades, finish_windows, new_vwap
from appliance.decode.walk import CORRUPT, LOST, NG_SIZE, OUT_FULL, finish, resync_dayfile, walk_dayfile, \
    walk_pcap, walk_pcapng
from appliance.errors import InputError, UserError
from appliance.replay.inputs import Damage, Source, chunks, detect

SLICE = 64 << 20             # bytes per kernel call, so progress can be shown often enough


@dataclass
class Options:
    feeds: list[tuple[int, int]] | None = None
    messages: bool = False
    packets: bool = False
    order_capacity: int = S.DEFAULT_ORDER_CAPACITY
    level_pool: int = S.DEFAULT_LEVEL_POOL
    window_ns: int = 1_000_000_000
    step_ns: int = 100_000_000
    vwap: bool = True                    # False: no VWAP windows (the tape and totals are still kept)


@dataclass
class Result:
    sources: list[Source] = field(default_factory=list)
    input_errors: list[str] = field(default_factory=list)
    gaps: list[tuple[int, int, int]] = field(default_factory=list)
    broken: list[int] = field(default_factory=list)
    seconds: float = 0.0


class Replay:
    """Decode a sequence of inputs as one stream; ``sink`` receives finished rows (see ``replay.output``)."""

    def __init__(self, options: Options, sink, progress=None):
        self.options = options
        self.sink = sink
        self.progress = progress
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
        self.vwap = new_vwap(options.window_ns, options.step_ns)
        self.result = Result()
        self._done_bytes = 0

    # -- driving the kernels ------------------------------------------------------------------------
    def run(self, paths: list[str]) -> Result:
        sources = [detect(p) for p in paths]          # every input is checked before any work starts
        started = time.perf_counter()
        total = sum(s.size for s in sources)
        for src in sources:
            self.result.sources.append(src)
            try:
                self._run_source(src, total)
            except InputError as err:
                self.result.input_errors.append(str(err))
            self._done_bytes += src.size
            # Rows carry a locate; its name is looked up when they are written.  The next input's directory may
            # name locates afresh (the next day), so this input's rows are written with this input's names.
            self.flush()
        self.finish_stream()
        self.result.seconds = time.perf_counter() - started
        return self.result

    def finish_stream(self) -> None:
        """End of all input (or of a live capture): give up on held holes, write every remaining row and window."""
        while not finish(self.mold, self.book, self.out, self.cnt, self.by_type):
            self.flush()
        self.flush()
        while not finish_windows(self.vwap):
            self._drain_windows()
        self._drain_windows(last=True)

    def _run_source(self, src: Source, total: int) -> None:
        ng = np.zeros(NG_SIZE, np.int64)
        damage = Damage(src)
        gen = chunks(src)
        reached = None
        try:
            while True:
                try:
                    buf, pos, final, base = gen.send(reached)
                except StopIteration:
                    return
                reached = self._walk(src, buf, pos, final, base, ng, total, damage)
        finally:
            gen.close()
            self.result.input_errors.extend(damage.errors())

    def _walk(self, src: Source, buf: np.ndarray, pos: int, final: bool, base: int, ng: np.ndarray, total: int,
              damage: Damage) -> int:
        """Walk one buffer (``base``: its first byte's offset in the input); the offset to resume from."""
        size = len(buf)
        args = (self.mold, self.book, self.out, self.cnt, self.by_type)
        while True:
            if damage.lost_at is not None:
                pos, found = resync_dayfile(buf, pos, size, final, self.cnt)
                if not found:
                    if final:
                        damage.found(base + size, at_end=True)
                    return pos
                damage.found(base + pos)
            end = min(pos + SLICE, size)
            last = final and end == size
            if src.kind == "pcap":
                pos, status = walk_pcap(buf, pos, end, src.big, src.nano, src.linktype, last, *args)
            elif src.kind == "pcapng":
                pos, status = walk_pcapng(buf, pos, end, ng, last, *args)
            else:
                pos, status = walk_dayfile(buf, pos, end, last, self.book, self.out, self.cnt, self.by_type)
            if self.progress is not None:
                self.progress(self._done_bytes + (min(base + pos, src.size) if not src.compressed else 0), total,
                              int(self.cnt[C.MESSAGES]))
            if status == OUT_FULL:
                self.flush()
                continue
            if status == LOST:
                damage.lose(base + pos)
                continue
            if status == CORRUPT:
                raise InputError(f"{src.path}: file framing is corrupt at byte {base + pos} of the "
                                 f"{'inflated ' if src.compressed else ''}stream; decoding of it stopped there")
            if end == size:
                return pos

    # -- moving rows out ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Hand every finished row to the sink and empty the buffers (the kernels then resume)."""
        out, n = self.out, self.out.n
        if n[S.N_TRADES] and self.options.vwap:
            # Windows read the tape before it is written out and its buffer reused.
            self._fold_trades(out.trades, int(n[S.N_TRADES]))
        self.sink.bbo(out.bbo, int(n[S.N_BBO]), self.book.sym)
        self.sink.trades(out.trades, int(n[S.N_TRADES]), self.book.sym)
        if n[S.N_MSGS]:
            self.sink.messages(out.msgs, out.msg_meta, int(n[S.N_MSGS]), self.mold)
        if n[S.N_PACKETS]:
            self.sink.packets(out.packets, int(n[S.N_PACKETS]), self.mold)
        for i in range(int(n[S.N_GAPS])):
            self.result.gaps.append(tuple(int(v) for v in out.gaps[i]))
        self.result.broken.extend(int(v) for v in out.broken[:n[S.N_BROKEN]])
        n[:S.FLAG_PACKETS] = 0

    def _fold_trades(self, tape: np.ndarray, rows: int) -> None:
        r = 0
        while True:
            r, status = feed_trades(tape, r, rows, self.vwap, self.cnt)
            self._drain_windows()
            if status == VWAP_DONE:
                return

    def _drain_windows(self, last: bool = False) -> None:
        self.sink.vwap(self.vwap.rows, int(self.vwap.n[0]), self.book.sym, last)
        self.vwap.n[0] = 0
