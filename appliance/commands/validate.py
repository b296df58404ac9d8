"""appliance validate: send INPUT through the lab, capture it live, and compare with offline replay of INPUT."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.commands.replay import _positive
from appliance.errors import UserError

READY = "capturing on"          # the capture's log line once its rings and program are in place


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="a pcap or pcapng capture of the feed")
    parser.add_argument("--engine", choices=("xdp", "tpacket"), default="xdp")
    parser.add_argument("--pps", type=_positive, default=20_000, help="send rate (default 20,000 frames/s)")
    parser.add_argument("--out", metavar="DIR", help="keep both results here (replay/ and live/); default: a "
                                                     "temporary directory, removed afterwards")
    parser.add_argument("--lab", default="appliance-validate", metavar="NAME",
                        help="network namespace made for the run and deleted after (default appliance-validate)")
    parser.add_argument("--queues", type=_positive, default=1,
                        help="rx/tx queues of the lab's veth pair (default 1: veth spreads one line's frames over "
                             "its queues in bursts, which a NIC's RSS never does to a flow, and the reordering "
                             "shows up as gaps)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="give up on the capture this long after sending ends (default 120)")


def _appliance(*argv: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *argv]


def _replay(path: str, out: Path) -> dict:
    done = subprocess.run(_appliance("replay", path, "--out", str(out), "-q"), capture_output=True, text=True)
    if done.returncode not in (0, 4):
        raise UserError(f"offline replay of {path} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads((out / "summary.json").read_text())


def _wait_ready(proc: subprocess.Popen, log: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        log.append(line.rstrip())
        if READY in line:
            return
    proc.kill()
    raise UserError("the capture did not start: " + (log[-1] if log else "no message"))


def run(args: argparse.Namespace) -> int:
    from appliance.capture.lab import CAPTURE_IF, SENDER_IF, Lab
    from appliance.capture.validate import compare, drop_lines
    from appliance.replay.inputs import detect

    src = detect(args.input)
    if src.kind not in ("pcap", "pcapng"):
        raise UserError(f"{args.input} is a {src.describe()}: validate needs a capture of frames (pcap or pcapng)")
    if os.geteuid() != 0:
        raise PermissionError("validate makes a network namespace")
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="appliance-validate-")
    base = Path(args.out or tmp.name)
    try:
        replay = _replay(args.input, base / "replay")
        feeds = [f"{ln['group']}:{ln['port']}" for ln in replay["lines"]]
        if not feeds:
            raise UserError(f"{args.input} holds no multicast feed datagrams to send")
        print(f"validate: replay of {args.input}: {replay['packets']:,} packets, {replay['messages']:,} messages, "
              f"{len(replay['gaps'])} gaps; lines {', '.join(feeds)}", file=sys.stderr)
        with Lab(args.lab, queues=args.queues) as lab:
            argv = _appliance("capture", "--iface", CAPTURE_IF, "--engine", args.engine, "--out", str(base / "live"))
            for feed in feeds:
                argv += ["--feed", feed]
            cap = subprocess.Popen(lab.netns_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            log: list[str] = []
            try:
                _wait_ready(cap, log, time.monotonic() + 300)       # first run compiles the kernels
                sent = subprocess.run(lab.netns_cmd(_appliance("replay", args.input, "--send", SENDER_IF,
                                                               "--pps", str(args.pps))),
                                      capture_output=True, text=True)
                if sent.returncode != 0:
                    raise UserError("sending failed: " + (sent.stderr.strip().splitlines() or ["?"])[-1])
                try:
                    out, err = cap.communicate(timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    cap.terminate()                  # no end of session in the input: stop it as an operator would
                    out, err = cap.communicate(timeout=60)
            finally:
                if cap.poll() is None:
                    cap.kill()
                    cap.wait()
        if cap.returncode != 0:
            raise UserError("the capture failed: " + ((log + err.splitlines())[-1:] or ["?"])[0])
        live = json.loads((base / "live" / "summary.json").read_text())
        diffs = compare(replay, live, base / "replay", base / "live")
        lat = live["capture"]["latency"]
        figures = (f"{live['packets']:,} packets, {live['messages']:,} messages, {len(live['gaps'])} gaps, "
                   f"{len(live['symbols']):,} books")
        if not diffs:
            print(f"PASS  {args.engine}: live capture equals replay of {args.input}: {figures}")
            if lat.get("samples"):
                print(f"      receive to book p50 {lat['p50_ns'] / 1e3:.1f} us, p99 {lat['p99_ns'] / 1e3:.1f} us, "
                      f"max {lat['max_ns'] / 1e3:.1f} us")
            return 0
        print(f"FAIL  {args.engine}: live capture differs from replay of {args.input}")
        for line in diffs + drop_lines(live):
            print("      " + line)
        return 1
    finally:
        if tmp is not None:
            tmp.cleanup()
