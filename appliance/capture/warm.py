"""Before the first frame: the ring kernel compiled or loaded, the decoder's tables resident."""
from __future__ import annotations

import numpy as np

from appliance.replay.decoder import Decoder, Options
from appliance.ring.atomics import no_wait
from appliance.ring.deliver import new_rx_state


def prefault(decoder) -> int:
    """Touch every page of the decoder's tables now (writing back what is there), so the kernel's first-touch
    faults -- a microsecond or two each, tens of thousands when a day's tables fill -- happen before the first
    frame instead of in the middle of the session (the benchmark saw 10-20 ms stalls in the first seconds).
    Returns the bytes touched: the full table sizes (about 730 MiB at the defaults) become resident."""
    page = 4096
    total = 0
    for table in decoder.tables():
        for array in table:
            if isinstance(array, np.ndarray) and array.nbytes >= page:
                flat = array.reshape(-1).view(np.uint8)
                np.bitwise_or(flat[::page], 0, out=flat[::page])     # a write: read faults map the zero page
                total += array.nbytes
    return total


def warm(engine: str, iface: str = "", queues: list[int] | None = None, tpacket_version: int = 3) -> None:
    """Run the ring kernel once on an empty ring of the right types, so compiling it (first run) or loading it
    from the cache happens before the socket exists and no frame waits for it."""
    state = new_rx_state(Decoder(Options(order_capacity=64, level_pool=64), sink=None).state)
    if engine == "tpacket" and tpacket_version == 2:
        from appliance.ring import tpacket2_rx as v2

        geom = np.zeros(v2.G2_SIZE, np.int64)
        geom[[v2.G2_BLOCK_SIZE, v2.G2_PER_BLOCK, v2.G2_FRAME_SIZE, v2.G2_FRAMES]] = 4096, 2, 2048, 2
        ring = np.zeros(4096, np.uint8)
        v2.tpacket2_rx(ring, ring.view(np.uint32), geom, 1, *no_wait([0]), state)
    elif engine == "tpacket":
        from appliance.ring.tpacket_rx import G_BLOCK_SIZE, G_BLOCKS, G_LEFT, G_SIZE, tpacket_rx

        geom = np.zeros(G_SIZE, np.int64)
        geom[G_BLOCK_SIZE], geom[G_BLOCKS], geom[G_LEFT] = 4096, 1, -1
        ring = np.zeros(4096, np.uint8)
        tpacket_rx(ring, ring.view(np.uint32), geom, 1, *no_wait([0]), state)
    else:
        from appliance.ring.xsk import rx_queue_count
        from appliance.ring.xsk_rx import X_SIZE, xsk_rx

        n = max(1, len(queues) if queues is not None else rx_queue_count(iface))   # compiled per queue count
        words, addrs = np.zeros(64, np.uint32), np.zeros(32, np.uint64)
        xsk_rx((np.zeros(4096, np.uint8),) * n, (words,) * n, (addrs,) * n, (words,) * n, (addrs,) * n,
               np.zeros((n, X_SIZE), np.int64), 1, *no_wait([0] * n), state)


def warm_cold(workdir: str) -> None:
    """Start and finish a capture's cold side once -- its output process (tables) and recording process load
    their kernels before they say ready -- around a small shared region, no interface, no frame; and the
    capture's own end (its last rows published from Python)."""
    from appliance.capture.engine import Capture, CaptureOptions
    from appliance.cold import rows as R
    from appliance.decode.state import KIND_BROKEN, N_BBO, N_GAPS, N_TRADES, new_out

    options = CaptureOptions(iface="", feeds=[], decode=Options(order_capacity=64, level_pool=64),
                             record_dir=f"{workdir}/recordings", ring_rows=R.MIN_ROWS, record_ring=1 << 20)
    capture = Capture(options, out_dir=f"{workdir}/tables")
    cold = capture._cold()
    try:
        for proc in cold:
            proc.start()
        for proc in cold:
            proc.wait_ready()
    except BaseException:
        for proc in cold:
            proc.kill()
        raise
    # A row of every kind through the rings, so the output process formats each table once (broken.csv's
    # formatter runs only when there is a broken trade, gaps only with a gap) ...
    out = new_out()
    out.bbo[0] = [1, 1, 1000, 1, 2000, 1]
    out.trades[0] = [1, 1, ord("E"), ord("B"), 1, 1000, 1]
    out.trades[1] = [2, 1, KIND_BROKEN, 0, 0, 0, 1]
    out.gaps[0] = [0, 5, 9]
    out.n[N_BBO], out.n[N_TRADES], out.n[N_GAPS] = 1, 2, 1
    R.publish_now(out, capture.region.hot_view())
    capture.decoder.finish_stream()          # ... and the end of a capture: its last rows published from Python
    capture.region.set_state(R.STATE_FINISHED)
    capture.output.finish()
    capture.recording.finish()
