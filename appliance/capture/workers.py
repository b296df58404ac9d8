"""``appliance capture --workers N``: N capture processes splitting one interface's traffic (PACKET_FANOUT).

Each worker is this same command with ``--fanout MODE --fanout-group G`` and its own output directory
``OUT/worker-K``; the kernel hands each frame to exactly one member of the group.  ``hash`` (the default)
keeps a flow -- one (source, group, port) line -- on one worker, so each worker sees whole lines and its
session layer sees complete sequences.  The two lines of one A/B pair are two flows and may land on
different workers: each then builds that feed's books from its own line, without arbitration between them.
``qm`` follows the NIC's rx queue (RSS), ``lb`` round-robins (splits a line: only for raw throughput tests).

The parent forwards SIGINT/SIGTERM, waits for every worker and writes ``OUT/workers.json``: each worker's
exit status, packets, messages, gaps and drops, and their sums.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

SKIP_WITH_VALUE = {"--workers", "--out", "--fanout", "--fanout-group"}


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


def run_workers(args) -> int:
    base = Path(args.out)
    base.mkdir(parents=True, exist_ok=True)
    group = args.fanout_group or (os.getpid() & 0xFFFF) or 1
    mode = args.fanout or "hash"
    rest = [a for a in worker_argv(sys.argv[2:] if sys.argv[1:2] == ["capture"] else sys.argv[1:])
            if a not in ("-q", "--quiet")]
    procs = []
    for k in range(args.workers):
        argv = [sys.executable, "-m", "appliance", "capture", *rest, "--out", str(base / f"worker-{k}"),
                "--fanout", mode, "--fanout-group", str(group), "-q"]
        procs.append(subprocess.Popen(argv, start_new_session=True))

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    rows = []
    for k, code in enumerate(codes):
        path = base / f"worker-{k}" / "summary.json"
        s = json.loads(path.read_text()) if path.exists() else {}
        cap = s.get("capture", {})
        rows.append({"worker": k, "exit": code, "frames": cap.get("counters", {}).get("ring_frames", 0),
                     "packets": s.get("packets", 0), "messages": s.get("messages", 0),
                     "gaps": len(s.get("gaps", [])), "drops": cap.get("drops", {}),
                     "lines": [f"{ln['group']}:{ln['port']}" for ln in s.get("lines", []) if ln["packets"]]})
    total = {key: sum(r[key] for r in rows) for key in ("frames", "packets", "messages", "gaps")}
    total["drops"] = sum(sum(r["drops"].values()) for r in rows)
    (base / "workers.json").write_text(json.dumps({"fanout": mode, "group": group, "workers": rows,
                                                   "total": total}, indent=2) + "\n")
    if not getattr(args, "quiet", False):
        for r in rows:
            print(f"worker {r['worker']}  exit {r['exit']}  {r['frames']:,} frames  {r['packets']:,} packets  "
                  f"{r['messages']:,} messages  lines {', '.join(r['lines']) or '-'}")
        print(f"total     {total['frames']:,} frames, {total['drops']:,} drops ({mode} fan-out, group {group}); "
              f"per-worker results in {base}/worker-K/")
    return max(codes) if codes else 0
