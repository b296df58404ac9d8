#!/usr/bin/env python3
"""The latency floor of this machine: how long a thread that does nothing but read the clock is kept off its CPU.

    .venv/bin/python bench/platform_floor.py [--seconds 5] [--cpus 0,1] [--rate 200000]

A numba loop pinned to one CPU reads CLOCK_MONOTONIC as fast as it can; every gap between two reads longer than
10 us is a time the thread was not running (an interrupt, a softirq, another task, the hypervisor taking the
virtual CPU).  A receiver can be no better than this: a frame that arrives during a gap waits for its end.  For
each CPU it prints the gaps by length and, assuming frames arrive evenly, the share of frames such gaps alone
would delay by more than 100 us and 1 ms -- against 1% and 0.1%, the p99 < 100 us and p99.9 < 1 ms targets.

With ``--rate R`` (root) it measures again while tcpreplay sends the capture bench's feed at R frames/s from
lab1 (CPU 0) into a lab namespace where nobody listens -- the sending core's load during a capture run, without
a receiver.  (On veth the receive softirq runs on the sending core; the XDP program's stamp is taken there.)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from appliance._jit import kernel                        # noqa: E402
from appliance.ring.atomics import CLOCK_MONOTONIC, clock_ns  # noqa: E402

MIN_GAP = 10_000
BUCKETS = 14                  # 10, 20, 40 ... us


@kernel
def spin(duration_ns, ts, hist, gaps, cap):
    """Read the clock until ``duration_ns`` passed; file every gap > MIN_GAP ns; returns the gaps kept."""
    start = clock_ns(CLOCK_MONOTONIC, ts)
    last = start
    n = 0
    while last - start < duration_ns:
        now = clock_ns(CLOCK_MONOTONIC, ts)
        d = now - last
        if d > MIN_GAP:
            k = 0
            v = d // MIN_GAP
            while v > 1 and k < BUCKETS - 1:
                v >>= 1
                k += 1
            hist[k] += 1
            if n < cap:
                gaps[n] = d
                n += 1
        last = now
    return n


def measure(cpu: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    result = {}

    def run():
        os.sched_setaffinity(0, {cpu})
        ts, hist, gaps = np.zeros(2, np.int64), np.zeros(BUCKETS, np.int64), np.zeros(1 << 20, np.int64)
        spin(1000, ts, hist, gaps, len(gaps))
        hist[:] = 0
        n = spin(int(seconds * 1e9), ts, hist, gaps, len(gaps))
        result["hist"], result["gaps"] = hist, gaps[:n]

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return result["hist"], result["gaps"]


def report(label: str, seconds: float, hist: np.ndarray, gaps: np.ndarray) -> None:
    total = seconds * 1e9
    delayed = {x: float(np.clip(gaps - x, 0, None).sum()) / total for x in (100_000, 1_000_000)}
    edges = " ".join(f"{MIN_GAP * (1 << k) // 1000}:{int(c)}" for k, c in enumerate(hist) if c)
    print(f"{label}: off-CPU {gaps.sum() / total * 100:.2f}% of the time, worst gap {gaps.max(initial=0) / 1e3:,.0f} us;"
          f" gaps by length from (us): {edges}")
    print(f"{'':{len(label)}s}  frames arriving evenly that these gaps alone delay > 100 us: "
          f"{delayed[100_000] * 100:.3f}% (p99 target allows 1%), > 1 ms: {delayed[1_000_000] * 100:.4f}% "
          f"(p99.9 target allows 0.1%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cpus", default="0,1")
    parser.add_argument("--rate", type=int, default=None, help="also measure under this much traffic (root)")
    args = parser.parse_args()
    cpus = [int(c) for c in args.cpus.split(",")]
    for cpu in cpus:
        report(f"idle machine, cpu{cpu}", args.seconds, *measure(cpu, args.seconds))
    if args.rate:
        from appliance.capture.lab import Lab
        from capture_vs_peers import feed_pcap

        pcap, frames, _ = feed_pcap(2_500_000, 7)
        lab = Lab("appl-floor")
        if lab.exists():
            lab.down()
        lab.up()
        try:
            for cpu in cpus:
                limit = min(frames, int(args.rate * (args.seconds + 1)))
                sender = subprocess.Popen(lab.netns_cmd(["taskset", "-c", "0", "tcpreplay", "--intf1=lab1",
                                                         f"--pps={args.rate}", "--timer=nano", f"--limit={limit}",
                                                         str(pcap)]), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                try:
                    report(f"sending {args.rate:,}/s, cpu{cpu}", args.seconds, *measure(cpu, args.seconds))
                finally:
                    sender.kill()
                    sender.wait()
        finally:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
