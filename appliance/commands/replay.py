"""appliance replay: decode captures or NASDAQ day files into books, top of book, trades and VWAP windows."""
from __future__ import annotations

import argparse
import ipaddress
import sys
import time

from appliance.args import parse_feed
from appliance.args import positive as _positive
from appliance.errors import EXIT_DAMAGED_INPUT, RunFailed, UserError

PROGRESS_MIN_BYTES = 32 << 20


def check_feeds(feeds: list[tuple[int, int]] | None) -> None:
    """The --feed lines name distinct lines and fit the line table."""
    from appliance.decode.state import MAX_LINES

    if feeds and len(set(feeds)) != len(feeds):
        raise UserError("the same --feed is named twice")
    if feeds and len(feeds) > MAX_LINES:
        raise UserError(f"at most {MAX_LINES} --feed lines")


def _count(text: str) -> int:
    return 0 if text.strip() == "0" else _positive(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="pcap, pcapng or NASDAQ ITCH 5.0 day file, optionally gzipped (detected by content); "
                             "several inputs are decoded in order as one stream")
    parser.add_argument("--out", metavar="DIR", help="output directory (created if missing; required unless --send)")
    parser.add_argument("--feed", action="append", type=parse_feed, metavar="GROUP:PORT",
                        help="a feed line to decode (repeat for A/B lines); default: every multicast "
                             "destination outside 224.0.0.0/24")
    parser.add_argument("--messages", action="store_true",
                        help="also write messages.csv: every applied message with all its fields")
    parser.add_argument("--packets", action="store_true",
                        help="also write packets.csv: every MoldUDP64 packet with its frame number, line, session, "
                             "sequence, count and what became of it")
    parser.add_argument("--order-capacity", type=_positive, default=None, metavar="N",
                        help="live orders the order table holds (default 6,000,000: a full NASDAQ day)")
    parser.add_argument("--level-pool", type=_positive, default=None, metavar="N",
                        help="price levels shared by all books (default 16,777,216)")
    parser.add_argument("--vwap-window-ms", type=_positive, default=1000, metavar="MS",
                        help="VWAP window in feed time (default 1000)")
    parser.add_argument("--vwap-step-ms", type=_positive, default=100, metavar="MS",
                        help="VWAP emission step in feed time (default 100)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no report on stdout")
    send = parser.add_argument_group("sending instead of decoding (tcpreplay)")
    send.add_argument("--send", metavar="IFACE",
                      help="send the capture's frames out of IFACE instead of decoding them (pcap or pcapng)")
    rate = send.add_mutually_exclusive_group()
    rate.add_argument("--pps", type=_positive, metavar="N", help="frames per second (default 10,000)")
    rate.add_argument("--topspeed", action="store_true", help="as fast as the interface takes them")
    send.add_argument("--loop", type=_count, metavar="N", help="send the inputs N times (default 1; 0: until Ctrl-C)")


class _Progress:
    """A one-line progress bar on stderr, redrawn at most every 0.2 s."""

    def __init__(self):
        self.last = 0.0
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, messages: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.2:
            return
        self.last = now
        frac = min(1.0, done / total) if total else 0.0
        rate = messages / (now - self.start) / 1e6
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:30s}] {frac * 100:5.1f}%  {messages:,} msgs  {rate:.2f} M msg/s ")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\r" + " " * 79 + "\r")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    if args.send:
        from appliance.capture.send import run_send

        return run_send(args)
    if args.out is None:
        raise UserError("--out DIR is required (or --send IFACE to put the frames on the wire)")
    if args.pps or args.topspeed or args.loop is not None:
        raise UserError("--pps, --topspeed and --loop go with --send IFACE")
    import os

    from dataclasses import replace

    import numpy as np

    from appliance.decode import counters as C
    from appliance.replay.decoder import VwapFold
    from appliance.replay.writer import BackgroundSink
    from appliance.decode import state as S
    from appliance.replay import summary as report_mod
    from appliance.replay.engine import Options, Replay
    from appliance.replay.output import CsvSink, write_json

    if args.vwap_window_ms % args.vwap_step_ms:
        raise UserError("--vwap-window-ms must be a whole multiple of --vwap-step-ms")
    if args.vwap_window_ms // args.vwap_step_ms > 100:
        raise UserError("--vwap-window-ms may span at most 100 steps of --vwap-step-ms")
    feeds = args.feed or None
    check_feeds(feeds)
    options = Options(
        feeds=feeds, messages=args.messages, packets=args.packets,
        order_capacity=args.order_capacity or S.DEFAULT_ORDER_CAPACITY,
        level_pool=args.level_pool or S.DEFAULT_LEVEL_POOL,
        window_ns=args.vwap_window_ms * 1_000_000, step_ns=args.vwap_step_ms * 1_000_000)
    from appliance._jit import cache_is_cold
    from appliance.replay.rundir import RunDir

    cold = cache_is_cold()
    if cold and not args.quiet:
        print("appliance: first run of this version: compiling the decode kernels (about a minute, once; "
              "cached afterwards)", file=sys.stderr)
    sizes = sum(os.path.getsize(p) for p in args.inputs if os.path.isfile(p))
    progress = _Progress() if sys.stderr.isatty() and sizes >= PROGRESS_MIN_BYTES and not args.quiet else None
    # The run is written into a staging directory and swapped in as --out only when it is complete, so a run
    # that fails (a missing input, a full disk, Ctrl-C) leaves the previous run's directory as it was.
    run_dir = RunDir(args.out)
    stage = run_dir.open()
    try:
        # Decoding (this thread) and folding, formatting and writing (the writer thread) overlap on two cores.
        late = np.zeros(C.SIZE, np.int64)
        fold = VwapFold(options.window_ns, options.step_ns, late)
        sink = BackgroundSink(CsvSink(str(stage), args.messages, args.packets), fail_fast=True, fold=fold)
        engine = Replay(replace(options, vwap=False), sink, progress)
        started = time.perf_counter()
        try:
            engine.run(args.inputs)
        except BaseException:
            _close_quietly(sink)
            raise
        finally:
            if progress:
                progress.close()
        sink.close()
        engine.result.seconds = time.perf_counter() - started         # the rows written, not only decoded
        engine.cnt[C.VWAP_LATE_TRADES] += late[C.VWAP_LATE_TRADES]
        if feeds:
            selection = "selected by --feed: " + ", ".join(
                f"{ipaddress.IPv4Address(g)}:{p}" for g, p in feeds)
        else:
            selection = "auto: every IPv4 multicast destination outside 224.0.0.0/24 (name lines with --feed)"
        summary = report_mod.build(engine, selection)
        summary["messages_csv"] = args.messages
        summary.update(sink.stats())
        summary["elapsed_includes_compiling"] = cold
        write_json(stage / "summary.json", summary)
        run_dir.commit()
    except RunFailed as err:
        raise RunFailed(f"{err}; the run is incomplete and was discarded ({args.out} is as it was before)") from None
    finally:
        run_dir.discard()
    if not args.quiet:
        print(report_mod.report(summary, args.out))
    return EXIT_DAMAGED_INPUT if summary["input_errors"] else 0


def _close_quietly(sink) -> None:
    """Close the sink's files after a failure without masking it (the failure is what gets reported)."""
    try:
        sink.close()
    except RunFailed:
        pass
