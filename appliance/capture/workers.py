"""``appliance capture --workers N``: N capture processes splitting one interface's traffic (PACKET_FANOUT).

Each worker is this same command with ``--fanout MODE --fanout-group G`` and its own output directory
``OUT/worker-K``; the kernel hands each frame to exactly one member of the group.  ``hash`` (the default)
keeps a flow -- one (source, group, port) line -- on one worker, so each worker sees whole lines and its
session layer sees complete sequences.  The two lines of one A/B pair are two flows and may land on
different workers: each then builds that feed's books from its own line, without arbitration between them.
``qm`` follows the NIC's rx queue (RSS), ``lb`` round-robins (splits a line: only for raw throughput tests).

The workers keep in step through a start and an end line (``capture/ready.py``): no worker takes a frame before
every worker has joined the group, and none leaves it while another still takes frames (the flow -> worker
mapping changes with each member that joins or leaves); when one sees every session end, the others stop once
their own lines are quiet, so a worker whose lines all went elsewhere stops too.  The parent opens the start
line, says ``capturing on`` and writes ``--ready-file`` once every worker takes frames, and stops the others
when one fails (its lines would move to them mid-session).  It forwards SIGINT/SIGTERM,
waits for every worker and writes ``OUT/workers.json``: each worker's exit status, packets, messages, gaps and
drops, their sums, and warnings: every line on one worker, a line split across workers, no feed frame at all.
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.capture.ready import POLL, all_joined, open_the_gate, remove_ready, write_ready
from appliance.capture.watch import merge, no_feed_sentence
from appliance.display import printable
from appliance.errors import EXIT_FAILED

SKIP_WITH_VALUE = {"--workers", "--out", "--fanout", "--fanout-group", "--ready-file", "--fanout-start"}


def worker_argv(argv: list[str]) -> list[str]:
    """The command line minus the options the parent sets per worker."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in SKIP_WITH_VALUE:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def say(text: str) -> None:
    print(f"appliance: {printable(text)}", file=sys.stderr, flush=True)


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """For Popen's preexec_fn: the worker gets SIGTERM (stop, write its summary) when this process dies, however
    it dies -- a SIGKILLed supervisor must not leave workers capturing for ever.  The flag survives exec."""
    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:            # the supervisor died before the flag was set
            os._exit(1)
    return arm


def run_workers(args) -> int:
    base = Path(args.out)
    base.mkdir(parents=True, exist_ok=True)
    group = args.fanout_group or (os.getpid() & 0xFFFF) or 1
    mode = args.fanout or "hash"
    rest = [a for a in worker_argv(sys.argv[2:] if sys.argv[1:2] == ["capture"] else sys.argv[1:])
            if a not in ("-q", "--quiet")]
    gate = Path(tempfile.mkdtemp(prefix="appliance-fanout-"))
    procs = []
    try:
        for k in range(args.workers):
            argv = [sys.executable, "-m", "appliance", "capture", *rest, "--out", str(base / f"worker-{k}"),
                    "--fanout", mode, "--fanout-group", str(group), "--fanout-start", str(gate),
                    "--ready-file", str(gate / f"ready-{k}"), "-q"]
            procs.append(subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent(os.getpid())))
        codes = _supervise(procs, gate, base, args, f"{args.workers} workers, {mode} fan-out, group {group}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        remove_ready(args.ready_file)
        shutil.rmtree(gate, ignore_errors=True)
    return _summarise(args, base, codes, mode, group)


def _supervise(procs: list, gate: Path, base: Path, args, what: str) -> list[int]:
    """Open the start line once every worker has joined, announce readiness once every worker takes frames, stop
    the rest when one fails (its lines would move to them mid-session); the exit codes."""
    def forward(signum, _frame):
        _signal_running(procs, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    codes: dict[int, int] = {}
    gate_open = announced = False
    try:
        while len(codes) < len(procs):
            for k, p in enumerate(procs):
                if k in codes or p.poll() is None:
                    continue
                codes[k] = p.returncode
                if p.returncode != 0:
                    say(f"worker {k} failed (exit {p.returncode}): stopping the others")
                    _signal_running(procs, signal.SIGTERM)
            if not gate_open and all_joined(gate, [p.pid for p in procs]):
                open_the_gate(gate)
                gate_open = True
            if gate_open and not announced and all((gate / f"ready-{k}").exists() for k in range(len(procs))):
                if args.ready_file:                      # first: a reader of the line may look for the file
                    write_ready(args.ready_file, {"pid": os.getpid(), "interface": args.iface, "engine": "tpacket",
                                                  "workers": [p.pid for p in procs]})
                say(f"capturing on {args.iface} (TPACKET_V{args.tpacket_version}, {what}); stop with Ctrl-C")
                announced = True
            time.sleep(POLL)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return [codes[k] for k in range(len(procs))]


def _signal_running(procs: list, signum: int) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)


def _summarise(args, base: Path, codes: list[int], mode: str, group: int) -> int:
    rows, seen = [], []
    for k, code in enumerate(codes):
        path = base / f"worker-{k}" / "summary.json"
        s = json.loads(path.read_text()) if path.exists() else {}
        cap = s.get("capture", {})
        if cap.get("multicast_seen") is not None:
            seen.append(cap["multicast_seen"])
        rows.append({"worker": k, "exit": code, "frames": cap.get("counters", {}).get("ring_frames", 0),
                     "packets": s.get("packets", 0), "messages": s.get("messages", 0),
                     "gaps": len(s.get("gaps", [])), "drops": cap.get("drops", {}),
                     "stop_reason": cap.get("stop_reason"),
                     "lines": [f"{ln['group']}:{ln['port']}" for ln in s.get("lines", []) if ln["packets"]]})
    total = {key: sum(r[key] for r in rows) for key in ("frames", "packets", "messages", "gaps")}
    total["drops"] = sum(sum(r["drops"].values()) for r in rows)
    warnings = spread_warnings(rows)
    no_feed, failed = None, False
    if total["frames"] == 0 and seen:             # each worker's watcher saw the same interface: merge, not sum
        merged = merge(seen)
        feeds = [f"{ipaddress.IPv4Address(g)}:{p}" for g, p in args.feed]
        no_feed = no_feed_sentence(feeds, args.iface, merged, fanout=False)
        failed = bool(merged["lines"] or merged["other_frames"])     # the same rule as one capture's
    (base / "workers.json").write_text(json.dumps({"fanout": mode, "group": group, "workers": rows, "total": total,
                                                   "warnings": warnings + ([no_feed] if no_feed else [])},
                                                  indent=2) + "\n")
    if not getattr(args, "quiet", False):
        for r in rows:
            print(f"worker {r['worker']}  exit {r['exit']}  {r['frames']:,} frames  {r['packets']:,} packets  "
                  f"{r['messages']:,} messages  lines {', '.join(r['lines']) or '-'}")
        print(f"total     {total['frames']:,} frames, {total['drops']:,} drops ({mode} fan-out, group {group}); "
              f"per-worker results in {base}/worker-K/")
    for text in warnings:
        say(f"warning: {text}")
    if no_feed:
        say(no_feed if failed else f"warning: {no_feed}")
    worst = max(codes) if codes else 0
    return max(worst, EXIT_FAILED) if failed else worst


def spread_warnings(rows: list[dict]) -> list[str]:
    """How the lines fell on the workers, when it defeats the point of fanning out."""
    out = []
    holders: dict[str, list[int]] = {}
    for r in rows:
        for line in r["lines"]:
            holders.setdefault(line, []).append(r["worker"])
    for line, workers in sorted(holders.items()):
        if len(workers) > 1:
            out.append(f"line {line} was split across workers {', '.join(map(str, workers))}: each has part of its "
                       "packets, so each sees gaps in its sessions and builds incomplete books (lb and cpu fan-out "
                       "split lines; hash and qm keep a line on one worker)")
    busy = [r["worker"] for r in rows if r["frames"]]
    if len(rows) > 1 and len(busy) == 1 and holders:
        out.append(f"every line went to worker {busy[0]} ({', '.join(sorted(holders))}); the other {len(rows) - 1} "
                   f"received nothing: hash fan-out keeps each line on one worker, so with {len(holders)} line(s) "
                   f"for {len(rows)} workers (or an unlucky hash) the work is not shared -- use fewer workers, or "
                   "qm fan-out with the lines steered to different rx queues")
    return out
