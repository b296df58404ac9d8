"""The replay driver: hands chunks of input to the walker kernels and drains their output buffers.

Python runs once per chunk of input or per full output buffer, never per packet: the kernels walk the
buffered bytes, and this module only moves finished rows to the writers and keeps score.
"""
from __future__ import annotations

import time

import numpy as np

from appliance.decode import counters as C
from appliance.decode.walk import CORRUPT, LOST, NG_SIZE, OUT_FULL, resync_dayfile, walk_dayfile, walk_pcap, \
    walk_pcapng
from appliance.errors import InputError
from appliance.replay.decoder import Decoder, Options, Result
from appliance.replay.inputs import Damage, Source, chunks, detect

__all__ = ["Options", "Replay", "Result"]

SLICE = 64 << 20             # bytes per kernel call, so progress can be shown often enough


class Replay(Decoder):
    """Decode a sequence of inputs as one stream; ``sink`` receives finished rows (see ``replay.output``)."""

    def __init__(self, options: Options, sink, progress=None):
        super().__init__(options, sink)
        self.progress = progress
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
                pos, status = walk_pcap(buf, pos, end, src.big, src.nano, src.linktype, last, self.state)
            elif src.kind == "pcapng":
                pos, status = walk_pcapng(buf, pos, end, ng, last, self.state)
            else:
                pos, status = walk_dayfile(buf, pos, end, last, self.state)
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
