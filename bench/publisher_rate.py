#!/usr/bin/env python3
"""The NATS publisher alone: how many records a second it gets acknowledged by one nats-server.

    .venv/bin/python bench/publisher_rate.py [--updates 200000] [--ack-window N] [--profile]

Rows are written into a Region up front (``tests/natstest.py``'s generator: top-of-book updates over 8 symbols,
a trade every other update, a broken trade in a hundred), the capture marked finished, and the publisher's own
loop (``publisher.run``) runs in this process until every record is acknowledged by a ``nats-server -js`` on a
loopback port with a temporary store.  Printed: records sent and acknowledged, conflated top-of-book updates,
seconds and records/s, and the publisher's own CPU time per record.  This is a component figure (no capture,
no consumer, no peer to compare with); the whole-command comparison is ``publish_vs_capture.py``.  Needs nats-server and nats-py; seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(1, str(HERE.parent))

from natstest import SERVER, Server, free_port, publish, region, rows  # noqa: E402

from appliance.cold import rows as RW  # noqa: E402
from appliance.publish.publisher import DEFAULTS, Publisher, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=200_000, help="top-of-book updates generated")
    parser.add_argument("--ack-window", type=int, default=DEFAULTS["ack_window"],
                        help="records unacknowledged at once (the publisher's ack_window)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the run")
    args = parser.parse_args()
    if SERVER is None:
        print("publisher_rate: nats-server is not installed (apt-get install nats-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as store:
        srv = Server(free_port(), store, Path(store) / "nats.log").start()
        try:
            reg = region(1 << 21)
            bbo_rows, tape_rows = rows(random.Random(1), args.updates, 34_200_000_000_000)
            publish(reg, bbo_rows, tape_rows)
            reg.set_state(RW.STATE_FINISHED)
            pub = Publisher(reg, dict(DEFAULTS, feed="bench", servers=[srv.url], buffer_records=1 << 22,
                                      flush_s=120, slot=1, ack_window=args.ack_window))
            from appliance.decode.vwap import feed_trades
            from appliance.publish import wire
            feed_trades(pub.reader.buffers[RW.TAPE][:0], 0, 0, pub.fold.vw, pub.fold.cnt)   # as the process does
            wire.warm()                                                                       # before it is ready
            life_r, _life_w = os.pipe()
            prof = cProfile.Profile() if args.profile else None
            t0, cpu0 = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            asyncio.run(run(pub, life_r))
            if prof:
                prof.disable()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            srv.kill()
    c = pub.outbox.counts
    print(f"rows: {len(bbo_rows):,} bbo, {len(tape_rows):,} tape; records sent {pub.seq:,}, acknowledged "
          f"{c['acknowledged']:,}, conflated {c['conflated']:,}, dropped {c['dropped']:,}; {seconds:.2f} s, "
          f"{pub.seq / seconds:,.0f} records/s; the publisher's own CPU {cpu:.2f} s, {cpu / pub.seq * 1e6:.1f} us a "
          f"record (the rest of the time it waits for nats-server's acknowledgements)")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0 if c["acknowledged"] == pub.seq else 1


if __name__ == "__main__":
    sys.exit(main())
