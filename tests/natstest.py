"""What the NATS tests share: nats-server processes (one, or a cluster on loopback), a Region the test writes
rows into (no capture), row generators, and reading a feed's stream back."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np

from appliance.cold import rows as RW
from appliance.decode import state as S
from appliance.publish import records as R

SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
SYMBOLS = ["AAPL", "BRK A", "A.B", "*>", "MSFT", "\xe9X", "~", "ZVZZT"]
SESSION = b"SESS000042"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """nats-server -js on 127.0.0.1:port with its store in ``store``; started and killed by the test.  With
    ``cluster_port``, a cluster node named ``name`` listening for routes there and routing to ``routes``."""

    def __init__(self, port: int, store, log, name: str | None = None, cluster_port: int | None = None,
                 routes: tuple[int, ...] = ()):
        self.port, self.store, self.log, self.proc = port, str(store), log, None
        self.name, self.cluster_port, self.routes = name, cluster_port, routes

    def argv(self) -> list[str]:
        argv = [SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store]
        if self.name:
            argv += ["-n", self.name]
        if self.cluster_port:
            argv += ["--cluster_name", "appliance-test", "-cluster", f"nats://127.0.0.1:{self.cluster_port}",
                     "-routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        return argv

    def start(self) -> "Server":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, open(self.log).read()
                time.sleep(0.05)
        raise AssertionError(f"nats-server did not listen on {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def cluster(tmp_path, n: int = 3) -> list[Server]:
    """``n`` cluster nodes on loopback (not started), each with its own store and log, routes to every other."""
    ports = [(free_port(), free_port()) for _ in range(n)]
    return [Server(port, tmp_path / f"store{i}", tmp_path / f"nats{i}.log", name=f"n{i}", cluster_port=cport,
                   routes=tuple(c for j, (_, c) in enumerate(ports) if j != i))
            for i, (port, cport) in enumerate(ports)]


def region(rows=1 << 16):
    made = RW.Region.create({RW.BBO: rows, RW.TAPE: rows, RW.GAPS: RW.MIN_ROWS})
    for loc, name in enumerate(SYMBOLS, start=1):
        raw = name.encode("latin-1")
        made.sym[loc, :len(raw)] = np.frombuffer(raw, np.uint8)
    made.ss_name[0] = np.frombuffer(SESSION, np.uint8)
    made.ss_meta[S.SS_COUNT] = 1
    made.set_state(RW.STATE_RUNNING)
    return made


def rows(rng, n, t0, bbo=True):
    """(bbo rows, tape rows): n updates over time from t0, trades on the tape with a clock mark per 100 ms step."""
    bbo_rows, tape = [], []
    step = 100_000_000
    for i in range(n):
        ts = t0 + i * 2_000_000
        if i == 0 or ts // step != (ts - 2_000_000) // step:
            tape.append([ts, 0, S.KIND_CLOCK, 0, 0, 0, 0])
        loc = rng.randint(1, len(SYMBOLS))
        if bbo:
            bbo_rows.append([ts, loc, rng.randint(1, 10**6), rng.randint(1, 10**4), rng.randint(1, 10**6),
                             rng.randint(1, 10**4)])
        if rng.random() < 0.5:
            tape.append([ts, loc, ord(rng.choice("ECP")), ord(rng.choice("BS")), rng.randint(1, 500),
                         rng.randint(1, 10**6), i + 1])
        if rng.random() < 0.01:
            tape.append([ts, loc, S.KIND_BROKEN, 0, 0, 0, i])
    return np.array(bbo_rows, np.int64).reshape(-1, 6), np.array(tape, np.int64).reshape(-1, 7)


def tape_trades(tape_rows) -> list[tuple]:
    """(timestamp, locate, shares, price, match) of the tape's trades (not clock marks, not broken trades)."""
    return [(int(t[0]), int(t[1]), int(t[4]), int(t[5]), int(t[6])) for t in tape_rows
            if t[S.TAPE_KIND] not in (S.KIND_CLOCK, S.KIND_BROKEN)]


def record_trades(records) -> list[tuple]:
    return [(r.timestamp, r.locate, r.shares, r.price, r.match) for r in records if r.kind == R.KIND_TRADE]


def publish(region_, bbo_rows, tape_rows, gaps=()):
    """Publish the rows into the region's rings as the hot side does (1,000 a chunk), then the gaps."""
    out, view = S.new_out(), region_.hot_view()
    for first in range(0, max(len(bbo_rows), len(tape_rows)), 1000):
        b, t = bbo_rows[first:first + 1000], tape_rows[first:first + 1000]
        out.bbo[:len(b)], out.n[S.N_BBO] = b, len(b)
        out.trades[:len(t)], out.n[S.N_TRADES] = t, len(t)
        RW.publish_now(out, view)
    for i, (first, last) in enumerate(gaps):
        out.gaps[i] = [0, first, last]
    out.n[S.N_GAPS] = len(gaps)
    RW.publish_now(out, view)


def start_publisher(region_, servers_urls, feed, **spec):
    from appliance.publish.publisher import PublisherProcess
    proc = PublisherProcess(region_, dict({"feed": feed, "servers": servers_urls, "flush_s": 20.0}, **spec))
    proc.start()
    proc.wait_ready()
    return proc


async def read_stream(url, feed, timeout=20):
    """Every message of the feed's stream, in stream order, decoded (checking subject and message id)."""
    import nats
    from nats.js.api import DeliverPolicy
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(R.stream_name(feed))
    sub = await js.subscribe(R.feed_filter(feed), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    got = []
    while len(got) < info.state.messages:
        msg = await sub.next_msg(timeout=timeout)
        rec = R.decode(msg.data)
        assert R.record_subject(feed, rec) == msg.subject
        assert msg.headers["Nats-Msg-Id"] == f"{rec.publisher:016x}-{rec.sequence}"
        got.append(rec)
    await nc.close()
    return got


def wait(pred, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def own(region_, slot, name):
    """A publisher's count (``publisher.OWN``) or word (``server_port``, ``mark``) as its slot holds it now."""
    from appliance.publish import publisher as P
    r, word = {"server_port": P.SERVER_PORT_WORD, "mark": P.MARK_WORD}.get(name) or P.OWN[name]
    return int(region_.consumer(r, slot)[word])
