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

from appliance.args import positive as _positive
from appliance.display import printable
from appliance.errors import UserError



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="a pcap or pcapng capture of the feed")
    parser.add_argument("--engine", choices=("xdp", "tpacket"), default="xdp")
    parser.add_argument("--tpacket-version", type=int, choices=(2, 3), default=3,
                        help="with --engine tpacket: the ring's TPACKET version (as for capture)")
    parser.add_argument("--pps", type=_positive, default=20_000, help="send rate (default 20,000 frames/s)")
    parser.add_argument("--out", metavar="DIR", help="keep both results here (replay/ and live/); default: a "
                                                     "temporary directory, removed afterwards")
    parser.add_argument("--lab", default=None, metavar="NAME",
                        help="network namespace made for the run and deleted after (default appliance-validate-PID, "
                             "unique per run); a namespace of that name that exists already is refused, never used")
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


def _wait_ready(proc: subprocess.Popen, ready: Path, deadline: float) -> None:
    """Until the capture's --ready-file appears (its rings and program are in place)."""
    while time.monotonic() < deadline:
        if ready.exists():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate()
    lines = err.strip().splitlines()
    raise UserError("the capture did not start: " + (lines[-1] if lines else "no message"))


SETTLE = 1.0                    # seconds after sending ends that a capture without an end of session still gets


def _say(text: str) -> None:
    print(f"validate: {printable(text)}", file=sys.stderr, flush=True)     # session names, paths: escaped


def _open_sessions(replay: dict) -> list[str]:
    """Sessions of the input that never send their end-of-session packet (all of them when none was seen):
    a capture of that input cannot stop by itself."""
    sessions = replay.get("sessions", [])
    return [s["session"] for s in sessions if not s["ended"]] or ([] if sessions else ["(none seen)"])


def _capture_live(args, lab, feeds: list[str], open_sessions: list[str], out: Path) -> tuple[int, list[str]]:
    """Capture in the lab while INPUT is sent into it; (the capture's exit status, its stderr lines)."""
    from appliance.capture.lab import CAPTURE_IF, SENDER_IF

    ready = out.with_name(f".{out.name}.ready")
    argv = _appliance("capture", "--iface", CAPTURE_IF, "--engine", args.engine, "--out", str(out),
                      "--ready-file", str(ready))
    if args.engine == "tpacket":
        argv += ["--tpacket-version", str(args.tpacket_version)]
    for feed in feeds:
        argv += ["--feed", feed]
    if open_sessions:
        argv.append("--no-stop-at-end")
    cap = subprocess.Popen(lab.netns_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(cap, ready, time.monotonic() + 300)     # first run compiles the kernels
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", args.input, "--send", SENDER_IF,
                                                       "--pps", str(args.pps))),
                              capture_output=True, text=True)
        if sent.returncode != 0:
            raise UserError("sending failed: " + (sent.stderr.strip().splitlines() or ["?"])[-1])
        if open_sessions:
            _say(no_end_notice(args.input, open_sessions))
            time.sleep(SETTLE)
            cap.terminate()
            _, err = cap.communicate(timeout=60)
        else:
            _say(f"sent; waiting up to {args.timeout:g} s (--timeout) for the capture to see the end of session")
            try:
                _, err = cap.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                _say(f"the capture saw no end of session within {args.timeout:g} s (frames lost on the way?): "
                     "stopping it")
                cap.terminate()
                _, err = cap.communicate(timeout=60)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    return cap.returncode, err.splitlines()


def no_end_notice(path: str, open_sessions: list[str]) -> str:
    return (f"{path} has no end-of-session packet for session {', '.join(open_sessions)}: stopping the "
            f"capture {SETTLE:g} s after sending ended")


def run(args: argparse.Namespace) -> int:
    from appliance.capture.lab import Lab
    from appliance.capture.validate import compare
    from appliance.replay.inputs import detect

    src = detect(args.input)
    if src.kind not in ("pcap", "pcapng"):
        raise UserError(f"{args.input} is a {src.describe()}: validate needs a capture of frames (pcap or pcapng)")
    if os.geteuid() != 0:
        raise PermissionError("validate makes a network namespace")
    lab = Lab(args.lab or f"appliance-validate-{os.getpid()}", queues=args.queues)
    lab.claim()                                  # ours alone, or refused before anything runs
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="appliance-validate-")
    base = Path(args.out or tmp.name)
    try:
        try:
            replay = _replay(args.input, base / "replay")
            feeds = [f"{ln['group']}:{ln['port']}" for ln in replay["lines"]]
            if not feeds:
                raise UserError(f"{args.input} holds no multicast feed datagrams to send")
            _say(f"replay of {args.input}: {replay['packets']:,} packets, {replay['messages']:,} messages, "
                 f"{len(replay['gaps'])} gaps; lines {', '.join(feeds)}; lab {lab.name}")
            code, log = _capture_live(args, lab, feeds, _open_sessions(replay), base / "live")
        finally:
            lab.down()
        if code != 0:
            raise UserError("the capture failed: " + (log[-1:] or ["?"])[0])
        live = json.loads((base / "live" / "summary.json").read_text())
        return _verdict(args, live, compare(replay, live, base / "replay", base / "live"))
    finally:
        if tmp is not None:
            tmp.cleanup()


def _verdict(args, live: dict, diffs: list[str]) -> int:
    from appliance.capture.validate import drop_lines

    lat = live["capture"]["latency"]
    figures = (f"{live['packets']:,} packets, {live['messages']:,} messages, {len(live['gaps'])} gaps, "
               f"{len(live['symbols']):,} books")
    if not diffs:
        print(f"PASS  {args.engine}: live capture equals replay of {printable(args.input)}: {figures}")
        if lat.get("samples"):
            print(f"      receive to book p50 {lat['p50_ns'] / 1e3:.1f} us, p99 {lat['p99_ns'] / 1e3:.1f} us, "
                  f"max {lat['max_ns'] / 1e3:.1f} us")
        return 0
    print(f"FAIL  {args.engine}: live capture differs from replay of {printable(args.input)}")
    for line in diffs + drop_lines(live):
        print("      " + line)
    return 1
