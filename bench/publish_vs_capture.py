#!/usr/bin/env python3
"""Live capture with and without publishing to NATS JetStream, same traffic, alternating runs.

    .venv/bin/python bench/publish_vs_capture.py [--rates 50000,200000,top] [--seconds 3] [--repeat 3]

Needs root (a network namespace) and nats-server and nats-py; about 2 minutes a repeat.  Do not run it beside another
heavy job: the machine has two cores.  The lab, the feed, tcpreplay and our capture's row come from
``capture_vs_peers.py`` (one namespace "appl-pubbench", a 4-queue veth pair; the generated A/B feed; tcpreplay
from lab1 on CPU 0; ``appliance capture --engine tpacket --hot-cpu 1`` on lab0, or ``--engine xdp``).

At every rate, and ``--repeat`` times, two captures (three with ``--control``), all recording the frames
(``--record`` into /dev/shm: the recording's receive timestamps are what the latency below is measured from, so
every run carries the same recording work):

* plain: the capture alone;
* publish: the same with ``--publish nats://127.0.0.1:P --publish-feed bench`` to a ``nats-server -js`` inside
  the namespace (CPU 0), and a consumer (this script with ``--consume``, CPU 0): a JetStream ordered consumer on
  ``md.bench.>`` from new records, started before the traffic, noting each record's arrival time.

nats-server and the consumer stand in for other hosts (in a deployment the NATS cluster and the downstream
systems are not on the capture box), but here they share CPU 0 with tcpreplay, whose softirq is the veth
receive path (the XDP program's receive stamp is taken there).  So they run ``SCHED_IDLE`` (``chrt --idle``):
only when CPU 0 has nothing else to run.  The publisher is the capture's own, at its configured nice (10).
Without this, their CPU (several seconds a run, more than the publisher's) throttled tcpreplay to 30-40k pps
and delayed the sender's softirq, and the comparison measured the machine's one spare core, not publishing.

``--control`` adds a third run between them: the capture alone with CPU 0 kept busy by a ``SCHED_IDLE``
spinner, which separates what publishing costs from what any load on CPU 0 costs on this machine.

The pair runs ``--repeat`` times per rate, alternating (plain, publish, plain, publish ...), because one 3-second
run's p99 on two shared cores moves by tens of percent from run to run.  Printed per rate: frames received and
drops (the capture's own counts and veth's) for every run, the capture's receive-to-book p50/p99 (summary.json
``capture.latency``); then the median p99 of the plain runs and of the publish runs, their ratio (publishing
should not move it by more than 10%) and the plain runs' own spread (max / min p99: the noise a ratio has to be
read against); records the publisher sent, acknowledged, conflated and dropped and its rate over the traffic
window, and **receive-to-consumer** latency percentiles, per publish run.

Receive to consumer, measured honestly.  A record carries the feed's timestamp (ns since midnight, the ITCH
message's), not the capture time, so the consumer notes CLOCK_REALTIME when each bbo or trade record reaches it,
and afterwards this script reads the recording: for every ITCH message it finds the first frame (either line)
holding a message with that feed timestamp and takes that frame's kernel receive timestamp (also
CLOCK_REALTIME, same machine).  Latency = arrival at the consumer - receive of the frame.  It spans the hot
side, the row ring, the publisher's poll (``POLL_MS``, 2 ms while rows flow) and conflation, NATS, JetStream
storing the record and the push to the consumer.  Records whose timestamp no frame holds (VWAP windows: the
window end) are not counted; a feed timestamp shared by several messages is attributed to its first frame (an
upper bound).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
import capture_vs_peers as peers  # noqa: E402 -- the lab, the feed, tcpreplay and our capture's receiver

from appliance.pcap import PCAP_MAGIC_BYTES  # noqa: E402

NS = "appl-pubbench"
FEED = "bench"
NATS_CPU = str(peers.TX_CPU)
KIND_BBO, KIND_TRADE = 1, 2
# nats-server and the consumer stand in for other hosts (a NATS cluster, downstream systems): on this 2-core
# machine they share CPU 0 with the sender, whose softirq is the veth receive path, so they run only when CPU 0
# has nothing else to run (SCHED_IDLE).
NICE = ("chrt", "--idle", "0")


# -- the consumer (a process of its own: this script with --consume) ----------------------------------------------
async def consume(url: str, out: Path) -> None:
    """Until SIGINT/SIGTERM: every record of md.<FEED>.> from now on, as (arrival ns, kind, feed timestamp, publisher
    sequence) rows in ``out`` (int64, native order)."""
    import nats
    from nats.js.api import DeliverPolicy

    from appliance.publish import records as R

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rows: list[tuple[int, int, int, int]] = []

    async def got(msg):
        now = time.time_ns()
        data = msg.data
        rows.append((now, data[1], struct.unpack_from("<q", data, 28)[0], struct.unpack_from("<Q", data, 20)[0]))

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=2)
    while not stop.is_set():                    # the publisher makes the stream once it is connected
        try:
            await js.stream_info(R.stream_name(FEED))
            break
        except Exception:                       # noqa: BLE001 -- not there yet
            await asyncio.sleep(0.1)
    await js.subscribe(R.feed_filter(FEED), cb=got, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    print("subscribed", flush=True)
    while not stop.is_set():                    # how far it is, for the script to wait until it has caught up
        print(f"consumed {len(rows)}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    await nc.close()
    np.array(rows, np.int64).reshape(-1, 4).tofile(out)
    print(f"cpu {time.process_time():.3f}", flush=True)


# -- the recording: first receive time of each feed timestamp ----------------------------------------------------
def first_receipt(directory: Path) -> dict[int, int]:
    """{ITCH timestamp: CLOCK_REALTIME ns of the first recorded frame holding a message with it}."""
    first: dict[int, int] = {}
    for path in sorted(directory.rglob("*.pcap")):
        data = path.read_bytes()
        big, nano = PCAP_MAGIC_BYTES.get(data[:4], (None, None))
        if big is not False:
            raise SystemExit(f"{path}: not a little-endian classic pcap file")
        scale = 1 if nano else 1000
        at = 24
        while at + 16 <= len(data):
            sec, nsec, incl, _ = struct.unpack_from("<IIII", data, at)
            frame, at = data[at + 16:at + 16 + incl], at + 16 + incl
            rx = sec * 1_000_000_000 + nsec * scale
            if len(frame) < 42 or frame[12:14] != b"\x08\x00":
                continue
            mold = 14 + (frame[14] & 0x0F) * 4 + 8
            if mold + 20 > len(frame):
                continue
            count, pos = struct.unpack_from(">H", frame, mold + 18)[0], mold + 20
            for _ in range(count if count != 0xFFFF else 0):
                if pos + 2 > len(frame):
                    break
                n = struct.unpack_from(">H", frame, pos)[0]
                if n >= 11 and pos + 2 + n <= len(frame):
                    ts = int.from_bytes(frame[pos + 7:pos + 13], "big")
                    if ts not in first or rx < first[ts]:
                        first[ts] = rx
                pos += 2 + n
    return first


def consumer_latency(rows: np.ndarray, first: dict[int, int]) -> dict:
    keep = (rows[:, 1] == KIND_BBO) | (rows[:, 1] == KIND_TRADE)
    lat = [int(arr) - first[int(ts)] for arr, ts in rows[keep][:, [0, 2]] if int(ts) in first]
    out = {"records": int(len(rows)), "matched": len(lat)}
    if lat:
        values = np.array(lat, np.int64)
        out.update({f"p{q}": float(np.percentile(values, q)) for q in (50, 99, 99.9)}, max=int(values.max()))
    if len(rows) > 1:
        span = (rows[-1, 0] - rows[0, 0]) / 1e9
        out["rate"] = len(rows) / span if span > 0 else 0.0
    return out


# -- the runs -------------------------------------------------------------------------------------------------------
class Capture(peers.Ours):
    """Our capture recording into /dev/shm, keeping summary.json's publishers before the base class parses it."""

    def __init__(self, engine, lines, name, record_dir: Path, publish_url: str | None):
        options = ("--record", str(record_dir))
        if publish_url:
            options += ("--publish", publish_url, "--publish-feed", FEED)
        super().__init__(engine, lines, name, options)
        self.record_dir, self.publishers = record_dir, []

    def parse(self, text):
        path = self.out_dir / "summary.json"
        if path.exists():
            self.publishers = json.loads(path.read_text())["capture"].get("publishers", [])
        return super().parse(text)


def consumed(consumer) -> int:
    said = [line for line in consumer.text().splitlines() if line.startswith("consumed ")]
    return int(said[-1].split()[1]) if said else 0


def caught_up(consumer, sent: int, quiet_s: float = 5.0, most_s: float = 120.0) -> None:
    """Until the consumer has every record the publisher sent, or it gained nothing for ``quiet_s``."""
    started, last, moved = time.monotonic(), -1, time.monotonic()
    while time.monotonic() - started < most_s:
        n = consumed(consumer)
        if n >= sent - 1:                       # all but the publisher's start record, sent before it subscribed
            return
        if n != last:
            last, moved = n, time.monotonic()
        elif time.monotonic() - moved > quiet_s:
            return
        time.sleep(0.25)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rate(lab, engine, pcap, frames, lines, rate, seconds, work: Path, url: str, server_pid: int,
             control: bool) -> dict:
    """One plain run, with ``control`` one busy run, and one publish run, in that order."""
    import psutil

    result = {}
    for name in ("plain", "busy", "publish") if control else ("plain", "publish"):
        record_dir = Path(tempfile.mkdtemp(prefix=f"pubbench-{name}-", dir="/dev/shm"))
        receiver = Capture(engine, lines, name, record_dir, url if name == "publish" else None)
        server_cpu = sum(psutil.Process(server_pid).cpu_times()[:2])
        consumer = None
        try:
            if name == "publish":
                original = receiver.start

                def start_then_consume(lab_, workdir, original=original):
                    nonlocal consumer
                    original(lab_, workdir)
                    out = workdir / "consumer.bin"
                    out.unlink(missing_ok=True)
                    consumer = peers.Spawned(lab_, [*NICE, sys.executable, str(Path(__file__).resolve()), "--consume",
                                                    url, str(out)], workdir, "consumer", NATS_CPU)
                    consumer.wait_for("subscribed", 60)
                    consumer.out_file = out
                receiver.start = start_then_consume
            elif name == "busy":
                original = receiver.start

                def start_then_spin(lab_, workdir, original=original):
                    nonlocal consumer
                    original(lab_, workdir)
                    consumer = peers.Spawned(lab_, [*NICE, sys.executable, "-c", "print('spinning', flush=True)\n"
                                                    "while True: pass"], workdir, "spinner", NATS_CPU)
                    consumer.wait_for("spinning", 30)
                receiver.start = start_then_spin
            row = peers.measure(lab, receiver, pcap, frames, rate, seconds, work)
            entry = {"row": row, "publishers": receiver.publishers,
                     "server_cpu": sum(psutil.Process(server_pid).cpu_times()[:2]) - server_cpu}
            if consumer is not None and name == "publish":
                sent = receiver.publishers[0].get("sent", 0) if receiver.publishers else 0
                caught_up(consumer, sent)
                consumer.stop(20)
                said = [line for line in consumer.text().splitlines() if line.startswith("cpu ")]
                entry["consumer_cpu"] = float(said[-1].split()[1]) if said else None
                got = np.fromfile(consumer.out_file, np.int64).reshape(-1, 4)
                entry["consumer"] = consumer_latency(got, first_receipt(record_dir))
            result[name] = entry
        finally:
            if consumer is not None:
                consumer.kill()
            subprocess.run(["rm", "-rf", str(record_dir)])
    return result


def us(ns) -> str:
    return "-" if ns is None else f"{ns / 1e3:,.1f}"


def _secs(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _p99(entry) -> float | None:
    got = entry["row"].got
    return (got.latency or {}).get("p99_ns") if got else None


def report(results: dict) -> None:
    print(f"\n{'rate':>4s} {'run':10s} {'sent':>9s} {'pps':>9s} {'received':>9s} {'veth':>5s} {'p50 us':>8s} "
          f"{'p99 us':>8s} {'cpu0':>5s}  drops (the capture's)")
    for rate, pairs in results.items():
        for i, runs in enumerate(pairs, start=1):
            for name, entry in runs.items():
                r, label = entry["row"], f"{name} {i}"
                if r.note:
                    print(f"{rate:>4s} {label:10s} {r.note}")
                    continue
                lat = r.got.latency or {}
                busy = f"{r.cpu0_s / r.window_s:5.0%}" if r.window_s else f"{'-':>5s}"
                print(f"{rate:>4s} {label:10s} {r.sent:>9,} {r.pps:>9,.0f} {r.got.frames:>9,} {r.link_drops:>5,} "
                      f"{us(lat.get('p50_ns')):>8s} {us(lat.get('p99_ns')):>8s} {busy}  {r.got.drops}")
        plain, busy, pub = ([v for v in (_p99(runs[name]) for runs in pairs if name in runs) if v]
                            for name in ("plain", "busy", "publish"))
        b = float(np.median(pub)) if pub else None
        if plain and pub:
            a = float(np.median(plain))
            print(f"{'':4s} capture p99 receive-to-book, median of {len(pub)} with publishing / of {len(plain)} "
                  f"without: {us(b)} / {us(a)} us = {b / a:.2f} ({(b / a - 1) * 100:+.0f}%); the runs without "
                  f"publishing spread {max(plain) / min(plain):.2f}x among themselves")
        if busy and pub:
            c = float(np.median(busy))
            print(f"{'':4s} with publishing / with CPU 0 kept busy by an idle-class spinner instead: {us(b)} / "
                  f"{us(c)} us = {b / c:.2f} ({(b / c - 1) * 100:+.0f}%)")
    print("\npublishing (publisher's report; consumer: JetStream ordered consumer, receive -> consumer in us; CPU "
          "seconds of the publisher, nats-server and the consumer, all on CPU 0):")
    print(f"{'rate':>4s} {'run':>3s} {'sent':>9s} {'acked':>9s} {'conflated':>10s} {'dropped':>8s} {'rate/s':>9s} "
          f"{'consumed':>9s} {'matched':>8s} {'p50':>9s} {'p99':>9s} {'p99.9':>9s} {'max':>9s} "
          f"{'pub s':>6s} {'srv s':>6s} {'con s':>6s}")
    for rate, pairs in results.items():
        for i, runs in enumerate(pairs, start=1):
            pub = runs.get("publish")
            if not pub or not pub["publishers"]:
                print(f"{rate:>4s} {i:>3d} no publisher report")
                continue
            p, c, r = pub["publishers"][0], pub.get("consumer", {}), pub["row"]
            window = r.sent / r.pps if r.pps else 0
            print(f"{rate:>4s} {i:>3d} {p.get('sent', 0):>9,} {p.get('acknowledged', 0):>9,} "
                  f"{p.get('conflated', 0):>10,} {p.get('dropped', 0):>8,} "
                  f"{p.get('sent', 0) / window if window else 0:>9,.0f} {c.get('records', 0):>9,} "
                  f"{c.get('matched', 0):>8,} {us(c.get('p50')):>9s} {us(c.get('p99')):>9s} "
                  f"{us(c.get('p99.9')):>9s} {us(c.get('max')):>9s} {_secs(p.get('cpu_seconds')):>6s} "
                  f"{_secs(pub.get('server_cpu')):>6s} {_secs(pub.get('consumer_cpu')):>6s}")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--consume":
        asyncio.run(consume(sys.argv[2], Path(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=peers.parse_rates, default=peers.parse_rates("50000,200000,top"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--messages", type=int, default=2_500_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="plain/publish pairs per rate (default 3)")
    parser.add_argument("--control", action="store_true",
                        help="also a run without publishing but with CPU 0 kept busy (SCHED_IDLE spinner)")
    parser.add_argument("--engine", choices=("tpacket", "xdp"), default="tpacket",
                        help="the capture's receive engine (default tpacket)")
    args = parser.parse_args()
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes a network namespace")
    server_bin = peers.shutil.which("nats-server")
    if server_bin is None:
        raise SystemExit("nats-server is not installed (apt-get install nats-server)")
    from appliance.capture.lab import Lab

    pcap, frames, lines = peers.feed_pcap(args.messages, args.seed)
    os.sched_setaffinity(0, {peers.TX_CPU})
    print(f"feed: {pcap.name}, {frames:,} frames; machine: {os.cpu_count()} cores; before: {peers.background()}")
    lab = Lab(NS)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="publish-vs-capture-") as tmp:
        work = Path(tmp)
        server = None
        try:
            if lab.exists():
                lab.down()
            lab.up()
            port = free_port()
            url = f"nats://127.0.0.1:{port}"
            server = peers.Spawned(lab, [*NICE, server_bin, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
                                         str(work / "store")], work, "nats-server", NATS_CPU)
            server.wait_for("Server is ready", 15)
            for rate in args.rates:
                key = "top" if rate is None else f"{rate // 1000}k"
                results[key] = []
                for i in range(args.repeat):
                    results[key].append(run_rate(lab, args.engine, pcap, frames, lines, rate, args.seconds, work, url,
                                                 server.pid, args.control))
                    print(f"  {key}: pair {i + 1} done", flush=True)
        finally:
            if server is not None:
                server.kill()
            lab.down()
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
