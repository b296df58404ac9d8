#!/usr/bin/env python3
"""Replay throughput: our numba kernels against the PyPI package itch-book, same day file, one run.

Both decode every message of a generated NASDAQ ITCH 5.0 day file, build every instrument's full book and
emit a top-of-book row whenever it changes; each runs in its own process so peak memory is its own.  The
script prints messages/s for each, the ratio, peak RSS, and checks that both end with the same top of book for
every instrument.

    .venv/bin/python bench/replay_vs_itch_book.py [--messages 20000000] [--seed 7] [--repeat 3]

The day file is generated once into bench/data/ and reused.  Do not run it beside another heavy job: the
machine has two cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SESSION_DATE = dt.date(2026, 11, 25)


def day_file(messages: int, seed: int) -> Path:
    from appliance.gen import write_feed
    from appliance.gen.presets import preset

    path = DATA / f"day-preset-{messages // 1_000_000}M-seed{seed}.itch50"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        spec = preset("day", seed=seed, messages=messages)     # 3,000 instruments, 03:30 to 20:05
        tmp = path.with_suffix(".tmp")
        write_feed(tmp, spec, fmt="dayfile")
        tmp.rename(path)
        print(f"generated {path.name}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s",
              flush=True)
    return path


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: getrusage's maxrss would include the parent's, kept across
    exec).  It counts the pages of a memory-mapped input, which belong to the page cache."""
    return _status_mb("VmHWM")


class _CountingSink:
    """Keeps the rows in the engine's buffers (as itch-book keeps its in memory) and only counts them."""

    def __init__(self):
        self.bbo_rows = 0

    def bbo(self, rows, n, sym):
        self.bbo_rows += n

    def trades(self, rows, n, sym):
        pass

    def vwap(self, rows, n, sym, last):
        pass


def worker_ours(path: str) -> dict:
    from appliance.decode import counters as C
    from appliance.decode.state import LOCATES, SIDE_LEN
    from appliance.replay.engine import Options, Replay
    from appliance.replay.summary import _best

    sink = _CountingSink()
    # The same work as itch-book's: books and top-of-book rows (no VWAP windows, which itch-book lacks).
    engine = Replay(Options(vwap=False), sink)
    started = time.perf_counter()
    engine.run([path])
    seconds = time.perf_counter() - started
    tops = {}
    for loc in range(LOCATES):
        if engine.book.side[2 * loc, SIDE_LEN] or engine.book.side[2 * loc + 1, SIDE_LEN]:
            tops[loc] = [*_best(engine.book, loc, 0), *_best(engine.book, loc, 1)]
    return {"seconds": seconds, "messages": int(engine.cnt[C.MESSAGES]), "bbo_rows": sink.bbo_rows,
            "peak_rss_mb": peak_rss_mb(), "anon_mb": _status_mb("RssAnon"), "tops": tops}


def worker_itch_book(path: str) -> dict:
    import itch_book

    started = time.perf_counter()
    rows = 0
    last: dict[int, list[int]] = {}
    with itch_book.Feed(path, date=SESSION_DATE, price_type="fixed") as feed:
        for batch in feed.batches(tables=("bbo",), rows=1_000_000):
            bbo = batch.bbo
            n = len(bbo["locate"])
            rows += n
            if n:
                loc = np.asarray(bbo["locate"])
                # the last row of each locate in this batch
                rev_unique, rev_index = np.unique(loc[::-1], return_index=True)
                idx = n - 1 - rev_index
                cols = [np.asarray(bbo[c]) for c in ("bid_px", "bid_sz", "ask_px", "ask_sz")]
                for j, l in zip(idx, rev_unique):
                    last[int(l)] = [int(c[j]) for c in cols]
        messages = int(feed.stats["messages"])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "messages": messages, "bbo_rows": rows, "peak_rss_mb": peak_rss_mb(),
            "anon_mb": _status_mb("RssAnon"), "tops": last}


def run_worker(name: str, path: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", name, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def compare_tops(ours: dict, theirs: dict) -> tuple[int, int, list]:
    keys = set(ours) | set(theirs)
    empty = [0, 0, 0, 0]
    differ = [k for k in sorted(keys, key=int) if ours.get(k, empty) != theirs.get(k, empty)]
    return len(keys), len(differ), [(k, ours.get(k), theirs.get(k)) for k in differ[:5]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each decoder, interleaved; the median is reported (this VM is noisy)")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, path = args.worker
        result = worker_ours(path) if name == "ours" else worker_itch_book(path)
        print(json.dumps(result))
        return 0

    path = day_file(args.messages, args.seed)
    # Warm numba's on-disk cache outside the timed runs (a first run compiles the kernels): the head of the
    # same day file goes through the same worker.
    head = DATA / "warm.itch50"
    with open(path, "rb") as src:
        head.write_bytes(src.read(1 << 20))
    run_worker("ours", head)
    runs: dict[str, list[dict]] = {"ours": [], "itch-book": []}
    for _ in range(args.repeat):
        for name in runs:
            runs[name].append(run_worker(name, path))
    results = {}
    for name, rs in runs.items():
        rs.sort(key=lambda r: r["seconds"])
        results[name] = rs[len(rs) // 2]
        rates = ", ".join(f"{r['messages'] / r['seconds'] / 1e6:.2f}" for r in rs)
        print(f"{name}: M msg/s over {len(rs)} runs: {rates}")
    print(f"\ninput: {path.name}, {path.stat().st_size / 1e9:.2f} GB, machine: {os.cpu_count()} cores")
    print("median run of each:")
    print(f"{'decoder':10s} {'messages':>12s} {'seconds':>8s} {'M msg/s':>8s} {'bbo rows':>12s} {'peak RSS MB':>11s} "
          f"{'anon MB at end':>14s}")
    for name, r in results.items():
        print(f"{name:10s} {r['messages']:>12,} {r['seconds']:>8.2f} {r['messages'] / r['seconds'] / 1e6:>8.2f} "
              f"{r['bbo_rows']:>12,} {r['peak_rss_mb']:>11.0f} {r['anon_mb']:>14.0f}")
    print("(peak RSS counts the page-cache pages of our memory-mapped input; itch-book reads it in 8 MB chunks)")
    ours, theirs = results["ours"], results["itch-book"]
    ratio = (ours["messages"] / ours["seconds"]) / (theirs["messages"] / theirs["seconds"])
    print(f"throughput ratio ours / itch-book: {ratio:.2f}x (target >= 2.0x)")
    total, differ, examples = compare_tops(ours["tops"], theirs["tops"])
    print(f"final top of book: {total - differ:,} of {total:,} instruments agree")
    for loc, a, b in examples:
        print(f"  locate {loc}: ours {a} itch-book {b}")
    if ours["messages"] != theirs["messages"]:
        print(f"message counts differ: ours {ours['messages']:,} itch-book {theirs['messages']:,}")
    return 0 if differ == 0 and ours["messages"] == theirs["messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
