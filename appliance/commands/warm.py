"""``appliance warm``: compile (or load from numba's cache) every kernel a capture runs, before it runs.

A capture compiles its ring kernel, and its cold processes their kernels, the first time they run with an
empty cache -- a minute or more here, many minutes in an emulated guest, and under systemd past the watchdog.
``provisioning/bootstrap.sh`` runs this (after a replay of the sample, which compiles the decoders) so the first
start of the service only loads them.  The AF_XDP ring kernel is compiled once per number of queues a capture
binds (the sockets' rings are a tuple to it): ``--xdp-queues`` says which counts (default 1 up to this machine's
CPU count, at most 8).  Needs no interface and no privilege; writes where NUMBA_CACHE_DIR says (else beside
the package).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def _counts(text: str) -> list[int]:
    from appliance.errors import UserError

    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise UserError(f"--xdp-queues {text!r}: give counts like 1,2,4 or 1-4") from None
        if not 1 <= first <= last <= 64:
            raise UserError(f"--xdp-queues {text!r}: counts go from 1 to 64")
        out.update(range(first, last + 1))
    return sorted(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("xdp", "tpacket", "all"), default="all",
                        help="the ring kernels to compile (default: all)")
    parser.add_argument("--xdp-queues", metavar="COUNTS", default=None,
                        help="the AF_XDP queue counts to compile the ring kernel for, e.g. 1-4 or 1,2,4 "
                             "(default: 1 up to the CPU count, at most 8)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but problems")


def _warm_publisher() -> None:
    from appliance.publish import wire

    wire.warm()


def run(args: argparse.Namespace) -> int:
    from appliance.capture.warm import warm, warm_cold

    counts = _counts(args.xdp_queues) if args.xdp_queues else list(range(1, min(8, os.cpu_count() or 1) + 1))
    steps = []
    if args.engine in ("xdp", "all"):
        steps += [(f"AF_XDP ring kernel, {n} queue{'s' if n > 1 else ''}", lambda n=n: warm("xdp", queues=list(range(n))))
                  for n in counts]
    if args.engine in ("tpacket", "all"):
        steps += [("TPACKET_V3 ring kernel", lambda: warm("tpacket")),
                  ("TPACKET_V2 ring kernel", lambda: warm("tpacket", tpacket_version=2))]
    with tempfile.TemporaryDirectory(prefix="appliance-warm-") as tmp:
        steps.append(("cold side (output and recording processes)", lambda: warm_cold(tmp)))
        steps.append(("NATS publisher's wire", _warm_publisher))
        total = time.perf_counter()
        for what, step in steps:
            started = time.perf_counter()
            step()
            if not args.quiet:
                print(f"warm: {what}: {time.perf_counter() - started:.1f} s", flush=True)
    if not args.quiet:
        print(f"warm: every kernel compiled or loaded in {time.perf_counter() - total:.1f} s")
    return 0
