"""appliance capture: receive a live feed through AF_XDP or TPACKET_V3/V2 and decode it as replay does."""
from __future__ import annotations

import argparse
import ipaddress
import sys

from appliance.args import (ENGINES, FANOUT_MODES, HOT_RT_MAX, IDLE_MODES, TPACKET_VERSIONS, XDP_COPY_MODES,
                            XDP_MODES, parse_feed, parse_queues, parse_record_ring, parse_ring_rows, parse_size)
from appliance.args import positive as _positive
from appliance.capture.send import check_iface
from appliance.commands.replay import check_feeds
from appliance.display import printable
from appliance.errors import NeedsPrivilege, UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iface", required=True, help="capture interface")
    parser.add_argument("--feed", action="append", type=parse_feed, required=True, metavar="GROUP:PORT",
                        help="a feed line to receive (repeat for A/B lines); the groups are joined on --iface")
    parser.add_argument("--engine", choices=ENGINES, default="xdp",
                        help="AF_XDP with the steering XDP program (default) or an AF_PACKET TPACKET ring "
                             "(--tpacket-version)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (as for replay)")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--no-stop-at-end", action="store_true",
                        help="keep running after every session has sent its end-of-session packet")
    parser.add_argument("--linger", type=float, default=0.5, metavar="S",
                        help="after end of session, stop once the lines are quiet this long (default 0.5)")
    parser.add_argument("--idle", choices=IDLE_MODES, default="poll",
                        help="when the ring is empty: poll (sleep until frames arrive; default), nap (sleep "
                             "--nap-us first so frames come in batches: least CPU, adds up to that latency), "
                             "spin (re-read the ring: a whole core, least latency)")
    parser.add_argument("--no-prefault", action="store_true",
                        help="do not make the decoder's tables resident at start (saves ~730 MiB of RSS at the "
                             "default capacities; page faults then land mid-session)")
    parser.add_argument("--nap-us", type=_positive, default=200, metavar="US", help="nap length (default 200)")
    rec = parser.add_argument_group("recording")
    rec.add_argument("--record", metavar="DIR", help="record the feed frames as nanosecond pcap files in DIR")
    rec.add_argument("--rotate-size", type=parse_size, metavar="SIZE", help="start a new file before SIZE")
    rec.add_argument("--rotate-seconds", type=_positive, metavar="S",
                     help="start a new file every S seconds, aligned to the wall clock")
    rec.add_argument("--max-files", type=_positive, metavar="N", help="keep only the newest N files")
    rec.add_argument("--snaplen", type=_positive, default=65535, help="bytes recorded per frame (default 65535)")
    rec.add_argument("--record-ring", type=parse_record_ring, default=64 << 20, metavar="SIZE",
                     help="shared frame ring the recording process drains (power of two, default 64M)")
    xdp = parser.add_argument_group("AF_XDP (--engine xdp)")
    xdp.add_argument("--xdp-mode", choices=XDP_MODES, default="auto",
                     help="XDP attach mode; auto tries native (driver) first")
    xdp.add_argument("--xdp-copy", choices=XDP_COPY_MODES, default="auto",
                     help="AF_XDP bind mode; auto tries zero-copy first")
    xdp.add_argument("--queues", type=parse_queues, metavar="LIST", help="rx queues to bind (default: all)")
    xdp.add_argument("--frames", type=_positive, default=None,
                     help="UMEM frames (4 KiB each) and ring slots per queue, a power of two (default 16384 for "
                          "up to 4 queues, fewer beyond so all queues stay within 256 MiB)")
    xdp.add_argument("--no-hugepages", action="store_true", help="UMEM on normal pages even if hugepages are free")
    tp = parser.add_argument_group("TPACKET (--engine tpacket)")
    tp.add_argument("--tpacket-version", type=int, choices=TPACKET_VERSIONS, default=3,
                    help="3 (default): frames handed over a block at a time -- least CPU per frame, but a frame "
                         "waits up to --retire-ms at low rates; 2: each frame handed over as it lands -- lowest "
                         "latency, a wakeup and a fixed slot per frame")
    tp.add_argument("--block-size", type=parse_size, default=1 << 20, help="ring block size (default 1M)")
    tp.add_argument("--blocks", type=_positive, default=64, help="ring blocks (default 64)")
    tp.add_argument("--retire-ms", type=_positive, default=None,
                    help="TPACKET_V3: hand a partly filled block over after this many ms (default 2)")
    tp.add_argument("--workers", type=_positive, default=1, metavar="N",
                    help="N capture processes sharing the traffic through PACKET_FANOUT (default 1); each writes "
                         "OUT/worker-K/ and OUT/workers.json sums them")
    tp.add_argument("--fanout", choices=FANOUT_MODES,
                    help="fan-out mode: hash (flow hash, the default with --workers), qm (rx queue), lb, cpu")
    tp.add_argument("--fanout-group", type=_positive, default=None, metavar="ID",
                    help="fan-out group id, to split traffic with capture processes started separately")
    dec = parser.add_argument_group("decoding (as for replay)")
    dec.add_argument("--no-tables", action="store_true",
                     help="write no bbo/trades/vwap tables: books, totals and summary.json only (the rows are "
                          "still made and counted, then discarded)")
    dec.add_argument("--messages", action="store_true", help="also write messages.csv")
    dec.add_argument("--packets", action="store_true", help="also write packets.csv")
    dec.add_argument("--ring-rows", type=parse_ring_rows, default=1 << 20, metavar="N",
                     help="rows per shared output ring (top of book, trades, messages; a power of two, default "
                          "1048576): how far the output process may fall behind before it loses rows")
    dec.add_argument("--slow-output-ms", type=float, default=0.0, help=argparse.SUPPRESS)    # test hook
    dec.add_argument("--order-capacity", type=_positive, default=None, metavar="N")
    dec.add_argument("--level-pool", type=_positive, default=None, metavar="N")
    place = parser.add_argument_group("placement (the hot thread receives and decodes; the output process formats "
                                      "and writes)")
    place.add_argument("--hot-cpu", type=int, metavar="CPU",
                       help="pin the hot thread to CPU; the output process and the control thread then run on the "
                            "other CPUs this process may use (or --output-cpus)")
    place.add_argument("--output-cpus", type=parse_queues, metavar="LIST", help="CPUs for the output process")
    place.add_argument("--hot-rt", type=int, metavar="PRIO",
                       help="run the hot thread SCHED_FIFO at PRIO (1-99); needs the kernel's RT throttling "
                            "(kernel.sched_rt_runtime_us not -1) so a busy loop cannot take its core forever")
    pub = parser.add_argument_group("publishing (a NATS JetStream publisher process on the cold side)")
    pub.add_argument("--publish", action="append", metavar="URL",
                     help="publish top of book, trades, VWAP and status to this NATS server (repeat for a cluster)")
    pub.add_argument("--publish-feed", default="itch", metavar="NAME",
                     help="the feed token of the subjects md.NAME.<symbol>.<kind> (default itch)")
    pub.add_argument("--publish-json", action="store_true", help="publish JSON records instead of binary")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="write PATH (JSON: pid, interface, engine) once the rings are up and the capture takes "
                             "frames; removed when it ends -- for scripts that wait before sending")
    parser.add_argument("--fanout-start", metavar="DIR", help=argparse.SUPPRESS)   # --workers' start line
    hand = parser.add_argument_group("handover without loss (either engine)")
    hand.add_argument("--handover-socket", metavar="PATH",
                      help="listen on the AF_UNIX socket PATH for a new capture that takes the feed over; this one "
                           "then drains its ring (TPACKET) or hands its sockets over (AF_XDP) and exits 0 "
                           "(stop_reason handover)")
    hand.add_argument("--take-over", metavar="PATH",
                      help="take the feed over from the capture listening on PATH once this one is ready: each "
                           "frame goes to exactly one of the two (same --iface and --feed lines needed)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no status line and no report (the readiness line and problems are still said)")


def options_from(args):
    from appliance.capture.engine import CaptureOptions
    from appliance.decode import state as S
    from appliance.replay.engine import Options

    feeds = args.feed
    check_feeds(feeds)
    if args.engine == "xdp" and (args.fanout or args.fanout_group or args.workers > 1):
        raise UserError("--fanout is for --engine tpacket (AF_XDP binds one socket per queue instead)")
    if args.fanout_group and not args.fanout:
        raise UserError("--fanout-group needs --fanout MODE")
    if args.fanout_start and not args.fanout:
        raise UserError("--fanout-start is set by --workers for its workers, with --fanout")
    if args.fanout and not args.fanout_group:
        raise UserError("--fanout needs --fanout-group ID (or --workers N, which picks one)")
    if args.engine != "tpacket" and args.tpacket_version != 3:
        raise UserError("--tpacket-version is for --engine tpacket")
    if args.retire_ms is not None and (args.engine != "tpacket" or args.tpacket_version != 3):
        raise UserError("--retire-ms is for --engine tpacket with TPACKET_V3 (a V2 ring hands each frame over "
                        "as it lands)")
    if (args.handover_socket or args.take_over) and (args.fanout or args.workers > 1):
        raise UserError("--handover-socket and --take-over are for one capture process, without --fanout or "
                        "--workers")
    if args.publish:
        from appliance.service.values import name as name_problem, nats_urls

        problem = nats_urls(args.publish)
        if problem:
            raise UserError(f"--publish {problem.replace('must be a list of', 'takes').replace('must be a', 'takes a')}")
        if name_problem(args.publish_feed):
            raise UserError(f"--publish-feed {args.publish_feed!r} {name_problem(args.publish_feed)}")
        if args.workers > 1 or args.no_tables:
            raise UserError("--publish works without --workers and --no-tables (the publisher reads the rows one "
                            "capture's output rings hold)")
    elif args.publish_json or args.publish_feed != "itch":
        raise UserError("--publish-feed and --publish-json go with --publish URL")
    check_placement(args)
    if args.frames and args.frames & (args.frames - 1):
        raise UserError("--frames must be a power of two")
    decode = Options(feeds=feeds, messages=args.messages, packets=args.packets,
                     order_capacity=args.order_capacity or S.DEFAULT_ORDER_CAPACITY,
                     level_pool=args.level_pool or S.DEFAULT_LEVEL_POOL)
    return CaptureOptions(
        iface=args.iface, feeds=feeds, engine=args.engine, decode=decode, duration=args.duration,
        linger=args.linger, stop_at_end_of_session=not args.no_stop_at_end, idle=args.idle, nap_us=args.nap_us,
        prefault=not args.no_prefault,
        xdp_mode=args.xdp_mode,
        xdp_copy=args.xdp_copy, queues=args.queues, frames=args.frames, hugepages=not args.no_hugepages,
        tpacket_version=args.tpacket_version, block_size=args.block_size, blocks=args.blocks,
        retire_ms=args.retire_ms or 2,
        fanout=(args.fanout_group, args.fanout) if args.fanout else None, record_dir=args.record,
        rotate_bytes=args.rotate_size, rotate_seconds=args.rotate_seconds, max_files=args.max_files,
        snaplen=args.snaplen, record_ring=args.record_ring, ready_file=args.ready_file, fanout_start=args.fanout_start,
        handover_socket=args.handover_socket, take_over=args.take_over,
        publish=[{"feed": args.publish_feed, "servers": args.publish,
                  "encoding": "json" if args.publish_json else "binary"}] if args.publish else [],
        ring_rows=args.ring_rows, slow_output_ms=args.slow_output_ms, hot_cpu=args.hot_cpu,
        output_cpus=args.output_cpus, hot_rt=args.hot_rt)


def check_placement(args, proc: str = "/proc") -> None:
    """--hot-cpu, --output-cpus and --hot-rt: one sentence each when they cannot be honoured."""
    import os

    allowed = os.sched_getaffinity(0)
    if args.hot_cpu is not None and args.hot_cpu not in allowed:
        raise UserError(f"--hot-cpu {args.hot_cpu} is not a CPU this process may run on ({_cpus(allowed)})")
    if args.output_cpus is not None:
        if not set(args.output_cpus) <= allowed:
            raise UserError(f"--output-cpus {_cpus(args.output_cpus)} is not within the CPUs this process may run "
                            f"on ({_cpus(allowed)})")
        if args.hot_cpu in args.output_cpus:
            raise UserError("--output-cpus must not include --hot-cpu: the output work would share the hot core")
    if args.hot_rt is not None:
        if not 1 <= args.hot_rt <= HOT_RT_MAX:
            raise UserError(f"--hot-rt takes a SCHED_FIFO priority from 1 to {HOT_RT_MAX}")
        try:
            runtime = int(open(f"{proc}/sys/kernel/sched_rt_runtime_us").read())
        except (OSError, ValueError):
            runtime = -1
        if runtime < 0:
            raise UserError("--hot-rt needs the kernel's RT throttling (kernel.sched_rt_runtime_us is -1 or "
                            "unreadable): without it a real-time loop could take its core forever")
        if getattr(args, "idle", "poll") == "spin":
            raise UserError("--hot-rt does not go with --idle spin: a real-time thread that never sleeps is "
                            "throttled by the kernel, a stall of ~50 ms every second (use --idle poll or nap)")


def _cpus(cpus) -> str:
    return ",".join(map(str, sorted(cpus)))


CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_BPF = 12, 13, 21, 39


def check_privileges(engine: str) -> None:
    """One sentence and exit 77 before anything is compiled or opened, instead of a failure half-way."""
    try:
        status = open("/proc/self/status").read()
        eff = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        return
    has = lambda cap: bool(eff >> cap & 1)      # noqa: E731
    missing = [] if has(CAP_NET_RAW) else ["CAP_NET_RAW"]
    if engine == "xdp":
        missing += [] if has(CAP_NET_ADMIN) else ["CAP_NET_ADMIN"]
        missing += [] if has(CAP_BPF) or has(CAP_SYS_ADMIN) else ["CAP_BPF"]
    if missing:
        raise NeedsPrivileges(f"capture with --engine {engine} needs {', '.join(missing)}: run it as root")


NeedsPrivileges = NeedsPrivilege


def run(args: argparse.Namespace) -> int:
    check_iface(args.iface)
    check_privileges(args.engine)                     # before numba is imported or anything compiled
    if args.workers > 1:
        return _run_workers(args)
    from appliance.capture.signals import catch_stop_signals, restore

    # From here a SIGINT/SIGTERM only sets a flag: one during start-up (imports, compiling, allocating the
    # tables) stops the capture before its first frame and still writes the outputs and summary.json.
    stopping = {"flag": None}
    old = catch_stop_signals(stopping)
    try:
        return _run_one(args, stopping)
    finally:
        restore(old)


def _run_workers(args: argparse.Namespace) -> int:
    from appliance.capture.workers import run_workers

    if args.engine != "tpacket":
        raise UserError("--workers is for --engine tpacket (AF_XDP binds one socket per queue instead)")
    if args.record:
        raise UserError("--record with --workers is not supported: record from a single capture")
    options_from(args)                                  # the same checks before any worker starts
    return run_workers(args)


def _run_one(args: argparse.Namespace, stopping: dict) -> int:
    from appliance._jit import cache_is_cold
    from appliance.capture.engine import Capture
    from appliance.capture.stats import status_line
    from appliance.replay import summary as report_mod
    from appliance.replay.output import NullSink, write_json

    options = options_from(args)
    say = lambda text: print(f"appliance: {printable(text)}", file=sys.stderr, flush=True)     # noqa: E731
    log = (lambda text: None) if args.quiet else say
    if cache_is_cold():
        log("first run of this version: compiling the decode kernels (about a minute, once)")
    if args.no_tables and (args.messages or args.packets):
        raise UserError("--no-tables writes no tables: it does not go with --messages or --packets")
    out_dir = NullSink(args.out).dir                  # created (or one sentence) before anything starts
    status = status_line() if sys.stderr.isatty() and not args.quiet else None
    capture = Capture(options, str(out_dir), tables=not args.no_tables, status=status, log=log, announce=say)
    try:
        capture.run(stopping)
    finally:
        if status is not None:
            sys.stderr.write("\n")
    feeds = ", ".join(f"{ipaddress.IPv4Address(g)}:{p}" for g, p in options.feeds)
    summary = report_mod.build(capture.decoder, f"captured on {options.iface}: {feeds}")
    summary["capture"] = capture.stats
    summary["elapsed_seconds"] = round(capture.seconds, 3)
    summary["messages_csv"] = args.messages
    write_json(out_dir / "summary.json", summary)
    if not args.quiet:
        print(report_mod.report(summary, args.out))
        print("\n".join(printable(line) for line in capture_report(capture.stats).splitlines()))
    return _outcome(capture, options, args.out)


def _outcome(capture, options, out: str) -> int:
    """The exit status, with one sentence on stderr per thing that went wrong: 1 (RunFailed) when the
    interface went away or the recording lost frames -- the capture ran, but not everything it was asked
    to keep was kept."""
    from appliance.capture.stats import recording_lost
    from appliance.errors import EXIT_FAILED, EXIT_OK

    problems = []
    if capture.stop_reason == "interface_gone":
        problems.append(f"interface {options.iface} went away during the capture; what arrived before is in {out}")
    if capture.recording is not None and capture.recording.ended:
        problems.append(capture.recording.ended)
    problems += [pub.ended for pub in capture.publishers if pub.ended]
    lost = recording_lost(capture.stats)
    if lost:
        problems.append(f"{lost} (summary.json capture.drops.recording)")
    tables = tables_incomplete(capture)
    if tables:
        problems.append(tables)
    no_feed = _no_feed(capture.stats, options)
    if no_feed:
        sentence, wrong = no_feed
        if wrong:
            problems.append(sentence)
        else:
            print(f"appliance: warning: {printable(sentence)}", file=sys.stderr)
    for sentence in problems:                          # paths and the interface name: escaped
        print(f"appliance: {printable(sentence)}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def tables_incomplete(capture) -> str | None:
    """One sentence when the output process did not write every row the capture made, else None."""
    output = capture.stats.get("output") or {}
    if capture.output is None:
        return None
    if capture.output.ended:
        return capture.output.ended
    if capture.output_code:
        return (f"the output process exited with status {capture.output_code}; the tables are incomplete "
                f"(its sentence is above)")
    lost = (output.get("consumers", {}).get("tables") or {}).get("rings", {})
    lost = {name: ring["lost"] for name, ring in lost.items() if ring["lost"]}
    if lost:
        said = ", ".join(f"{n:,} {name}" for name, n in lost.items())
        return (f"the output process fell more than a ring behind and lost rows ({said}; summary.json "
                f"capture.output); the tables are incomplete, the books and the summary are not (--ring-rows)")
    return None


def _no_feed(stats: dict, options) -> tuple[str, bool] | None:
    """(sentence, is it a failure) when the capture ran and no frame of the feed came, else None.  A failure (exit
    1) when other multicast lines did arrive -- the capture was pointed at the wrong lines; only a warning when
    nothing arrived at all (a quiet network, a capture stopped before the open) or when this process is one
    member of a fan-out group (another member may have taken every line).  A --workers member says nothing:
    its parent judges the sum of all workers."""
    from appliance.capture.watch import no_feed_sentence

    seen = stats.get("multicast_seen")
    if seen is None or stats["counters"]["ring_frames"] or options.fanout_start is not None:
        return None
    feeds = [f"{ipaddress.IPv4Address(g)}:{p}" for g, p in options.feeds]
    fanout = options.fanout is not None or bool(options.take_over or options.handover_socket)
    sentence = no_feed_sentence(feeds, options.iface, seen, fanout)
    return sentence, bool(seen["lines"] or seen["other_frames"]) and not fanout


def capture_report(stats: dict) -> str:
    drops = ", ".join(f"{k} {v:,}" for k, v in stats["drops"].items())
    lat = stats["latency"]
    lines = [f"capture    {stats['engine']} on {stats['interface']}, stopped by {stats['stop_reason']}; "
             f"{stats['counters']['ring_frames']:,} frames from the ring"]
    if stats["engine"] == "xdp":
        lines.append(f"  xdp      {stats['attach_mode']} attach, {'zero-copy' if stats['zerocopy'] else 'copy'} "
                     f"mode, queues {stats['queues']}, UMEM on "
                     f"{'hugepages' if stats['umem_hugepages'] else 'normal pages'}")
    lines.append(f"  drops    {drops}")
    if lat.get("samples"):
        lines.append(f"  latency  receive to book: p50 {lat['p50_ns'] / 1e3:,.1f} us, p99 {lat['p99_ns'] / 1e3:,.1f} us, "
                     f"p99.9 {lat['p99_9_ns'] / 1e3:,.1f} us, max {lat['max_ns'] / 1e3:,.1f} us "
                     f"({lat['samples']:,} frames)")
    else:
        lines.append("  latency  no samples")
    rec = stats.get("recording")
    if rec:
        lines.append(f"  record   {rec.get('files_opened', 0)} files, {rec.get('bytes_written', 0):,} bytes, "
                     f"{stats['drops'].get('recording', 0):,} frames not recorded")
    return "\n".join(lines)
