#!/usr/bin/env python3
"""Replay throughput: ours against the PyPI package itch-book, same day file, one run.

Three programs, each in its own process (so peak memory is its own), timed whole -- interpreter start, imports,
reading the input, exit -- and interleaved:

* ``appliance replay DAY --out DIR``: the command as a user runs it, every CSV table written (bbo, trades,
  broken, vwap: 0.9 GB of text for the 20 M-message day);
* ours, decoding only: every book built, top-of-book rows kept in memory and counted (itch-book's work);
* itch-book: every book built, top-of-book rows in memory (it has no CSV writer).

It prints the whole-process seconds and messages/s of each, the ratios (the target: the replay command with its
tables written >= 2.0x itch-book), the in-process decoding time and peak RSS of the two decoders, and checks
that both end with the same top of book for every instrument.  ``--with-messages`` also times one
``replay --messages`` (messages.csv as well).

    .venv/bin/python bench/replay_vs_itch_book.py [--messages 20000000] [--seed 7] [--repeat 3] [--with-messages]

The day file is generated once into bench/data/ and reused.  Do not run it beside another heavy job: the
machine has two cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SESSION_DATE = dt.date(2026, 11, 25)
LABELS = {"replay": "ours: appliance replay --out DIR", "ours": "ours: decoding only",
          "itch-book": "itch-book 0.2.1"}


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

    def gaps(self, rows, n):
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
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", name, str(path)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    return {**json.loads(proc.stdout), "wall": wall}


def run_replay(path: Path, out: Path, *extra: str) -> dict:
    """``appliance replay`` as a user runs it, timed from process start to exit, its tables written."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "appliance", "replay", str(path), "--out", str(out), "-q", *extra],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"appliance replay failed:\n{proc.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    written = sum(f.stat().st_size for f in out.iterdir() if f.suffix == ".csv")
    return {"wall": wall, "messages": summary["messages"], "csv_bytes": written,
            "output_waits": summary.get("output_waits"), "output_wait_seconds": summary.get("output_wait_seconds")}


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
    parser.add_argument("--with-messages", action="store_true",
                        help="also time one `replay --messages` (messages.csv too: several GB for a full day)")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, path = args.worker
        result = worker_ours(path) if name == "ours" else worker_itch_book(path)
        print(json.dumps(result))
        return 0

    path = day_file(args.messages, args.seed)
    out = DATA / "replay-out"
    # Warm numba's on-disk cache outside the timed runs (a first run compiles the kernels): the head of the
    # same day file goes through the same programs.
    head = DATA / "warm.itch50"
    with open(path, "rb") as src:
        head.write_bytes(src.read(1 << 20))
    run_worker("ours", head)
    run_replay(head, out, *(["--messages"] if args.with_messages else []))
    runs: dict[str, list[dict]] = {"replay": [], "ours": [], "itch-book": []}
    try:
        for _ in range(args.repeat):
            runs["replay"].append(run_replay(path, out))
            for name in ("ours", "itch-book"):
                runs[name].append(run_worker(name, path))
        with_messages = run_replay(path, out, "--messages") if args.with_messages else None
    finally:
        shutil.rmtree(out, ignore_errors=True)
    results = report(runs, path)
    if with_messages is not None:
        plain = results["replay"]
        print(f"replay --messages: {with_messages['wall']:.2f} s, "
              f"{with_messages['messages'] / with_messages['wall'] / 1e6:.2f} M msg/s, "
              f"{with_messages['csv_bytes'] / 1e9:.2f} GB of CSV; {with_messages['wall'] / plain['wall']:.2f}x the "
              "time of the replay without it")
    ours, theirs = results["ours"], results["itch-book"]
    total, differ, examples = compare_tops(ours["tops"], theirs["tops"])
    print(f"final top of book: {total - differ:,} of {total:,} instruments agree")
    for loc, a, b in examples:
        print(f"  locate {loc}: ours {a} itch-book {b}")
    counts = {name: r["messages"] for name, r in results.items()}
    if len(set(counts.values())) != 1:
        print(f"message counts differ: {counts}")
    return 0 if differ == 0 and len(set(counts.values())) == 1 else 1


def report(runs: dict[str, list[dict]], path: Path) -> dict:
    """Print the runs, the median run of each program and the ratios; the median runs."""
    results = {}
    for name, rs in runs.items():
        rs.sort(key=lambda r: r["wall"])
        results[name] = rs[len(rs) // 2]
        print(f"{LABELS[name]}: whole-process seconds over {len(rs)} runs: "
              + ", ".join(f"{r['wall']:.2f}" for r in rs))
    print(f"\ninput: {path.name}, {path.stat().st_size / 1e9:.2f} GB, machine: {os.cpu_count()} cores, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print("median run of each (whole process):")
    print(f"{'program':32s} {'messages':>12s} {'seconds':>8s} {'M msg/s':>8s} {'in-process s':>12s} "
          f"{'bbo rows':>11s} {'peak RSS MB':>11s}")
    for name, r in results.items():
        inner = f"{r['seconds']:.2f}" if "seconds" in r else "-"
        rows = f"{r['bbo_rows']:,}" if "bbo_rows" in r else "-"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        print(f"{LABELS[name]:32s} {r['messages']:>12,} {r['wall']:>8.2f} {r['messages'] / r['wall'] / 1e6:>8.2f} "
              f"{inner:>12s} {rows:>11s} {rss:>11s}")
    replay = results["replay"]
    print(f"replay wrote {replay['csv_bytes'] / 1e9:.2f} GB of CSV; the decoder waited for the writer "
          f"{replay['output_waits']} times, {replay['output_wait_seconds']} s")
    theirs = results["itch-book"]["wall"]
    print(f"ratio, whole process, ours with its tables written / itch-book: {theirs / replay['wall']:.2f}x "
          "(target >= 2.0x)")
    print(f"ratio, whole process, ours decoding only / itch-book: {theirs / results['ours']['wall']:.2f}x")
    print(f"ratio, in-process decoding, ours / itch-book: "
          f"{results['itch-book']['seconds'] / results['ours']['seconds']:.2f}x")
    return results


if __name__ == "__main__":
    sys.exit(main())
