"""appliance generate: write a synthetic NASDAQ TotalView-ITCH 5.0 feed as pcap, pcapng or a day file."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from appliance.errors import UserError


def _whole(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="file to write (its directory is created if missing)")
    parser.add_argument("--format", choices=("pcap", "pcapng", "dayfile"),
                        help="default: from OUT's name (.pcapng, .pcap, ITCH/.itch for a day file), else pcap")
    parser.add_argument("--gzip", action="store_true", default=None,
                        help="gzip the file (default when OUT ends in .gz)")
    parser.add_argument("--preset", choices=("sample", "day"),
                        help="sample: pcaps/sample.pcap (20k messages, A/B, gaps, malformed); day: the 20 M-message "
                             "benchmark day; options given as well override the preset")
    parser.add_argument("--messages", type=_whole, metavar="N", help="ITCH messages in the day (default 20,000)")
    parser.add_argument("--instruments", type=_whole, metavar="N", help="instruments (default 300)")
    parser.add_argument("--seed", type=_whole, metavar="S", help="random seed: same seed, same bytes (default 1)")
    parser.add_argument("--timeline", choices=("compact", "full"),
                        help="compact: the day's phases within half an hour (default); full: 03:30-20:05")
    parser.add_argument("--ab", action="store_true", default=None, help="send every packet on line B too")
    parser.add_argument("--gaps", type=_whole, metavar="N", help="packets to drop (see --gaps-on)")
    parser.add_argument("--gaps-on", choices=("A", "both"),
                        help="A: drop from line A only, line B fills them (default); both: true gaps")
    parser.add_argument("--gaps-both", type=_whole, metavar="N", help="further packets dropped from both lines")
    parser.add_argument("--malformed", type=_whole, metavar="N", help="hostile frames to inject")
    parser.add_argument("--vlan", type=_whole, metavar="ID", help="802.1Q VLAN id (the inner tag with --qinq)")
    parser.add_argument("--qinq", action="store_true", default=None, help="add an outer 802.1ad tag")
    parser.add_argument("--ip-options", action="store_true", default=None, help="IPv4 headers with options (IHL 6)")
    parser.add_argument("--microseconds", action="store_true", help="pcap with microsecond timestamps")
    parser.add_argument("--big-endian", action="store_true", help="pcap or pcapng in big-endian byte order")


def infer_format(out: Path, fmt: str | None, gzip: bool | None) -> tuple[str, bool]:
    """(format, gzip) from the options, else from the file name."""
    name = out.name.lower()
    zipped = name.endswith(".gz")
    base = name[:-3] if zipped else name
    if fmt is None:
        if base.endswith(".pcapng"):
            fmt = "pcapng"
        elif "itch" in base or base.endswith(".day"):
            fmt = "dayfile"
        else:
            fmt = "pcap"
    return fmt, zipped if gzip is None else gzip


_SPEC_OPTIONS = ("messages", "instruments", "seed", "timeline", "ab", "gaps", "gaps_on", "gaps_both", "malformed",
                 "vlan", "qinq", "ip_options")


def run(args: argparse.Namespace) -> int:
    from appliance.gen import PRESETS, FeedSpec, write_feed

    out = Path(args.out)
    fmt, gzip = infer_format(out, args.format, args.gzip)
    chosen = {name: getattr(args, name) for name in _SPEC_OPTIONS if getattr(args, name) is not None}
    spec = FeedSpec(**{**(PRESETS[args.preset] if args.preset else {}), **chosen})
    if fmt == "dayfile" and (spec.vlan_id is not None or spec.ip_options):
        raise UserError("--vlan, --qinq and --ip-options shape network frames, and a day file has none")
    if args.microseconds and fmt != "pcap":
        raise UserError("--microseconds applies to --format pcap only")
    if args.big_endian and fmt == "dayfile":
        raise UserError("--big-endian applies to pcap and pcapng; a day file is always big-endian")
    if out.is_dir():
        raise UserError(f"{out} is a directory; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = write_feed(out, spec, fmt=fmt, gzip=gzip, nanosecond=not args.microseconds, big_endian=args.big_endian)
    print(f"{manifest.summary()} Took {time.perf_counter() - started:.1f} s.")
    return 0
