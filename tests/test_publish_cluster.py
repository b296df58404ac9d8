"""Two publishers on two feeds into a 3-node NATS cluster (JetStream, streams with 3 replicas), on loopback.

The test starts three ``nats-server`` processes routed to each other, two publisher processes (rows written into
a Region by the test, as in test_publish_nats.py) with every node in their server list and ``replicas: 3``, and
kills the node the first publisher is connected to (its slot says which: ``publisher.SERVER_PORT_WORD``) while
both are sending.  A live consumer of every feed's stream (ordered JetStream consumers on ``md.<feed>.>``,
started once the streams exist) is connected to that same node, so it loses its node mid-stream too and has to
reconnect and resume.  Nothing acknowledged is missing, every publisher's sequences are 1..N without a gap or a
duplicate, the trades are the tape's in order; a publisher started again on the first feed is seen as a new
epoch, not a gap -- all of it in what the live consumer received, which is also exactly what a consumer reading
the streams afterwards from a surviving node gets.  Every server is killed on every exit path (the fixture).
"""
from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from appliance.publish import client, records as R
from natstest import SERVER, cluster, own, publish, record_trades, region, rows, start_publisher, tape_trades, wait

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install nats-py)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SERVER is None, reason="nats-server is not installed (apt-get install nats-server)")]

FEEDS = ("alpha", "beta.B")


@pytest.fixture
def nodes(tmp_path):
    made = cluster(tmp_path, 3)
    try:
        yield made
    finally:
        for srv in made:
            srv.kill()


async def _consume(url) -> dict[str, list]:
    """One consumer for ``md.>``: every stream whose subjects are under md., read from its first record."""
    from nats.js.api import DeliverPolicy
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=5)
    got = {}
    try:
        for info in await js.streams_info():
            subject, = info.config.subjects
            if not subject.startswith("md."):
                continue
            for attempt in range(6):            # a consumer placed on the dead node is not made: ask again
                try:
                    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
                    break
                except nats.errors.TimeoutError:
                    if attempt == 5:
                        raise
            recs = got[R.untoken(subject.split(".")[1])] = []
            while len(recs) < info.state.messages:
                recs.append(R.decode((await sub.next_msg(timeout=10)).data))
            await sub.unsubscribe()
    finally:
        await nc.close()
    return got


class LiveConsumer:
    """Ordered JetStream consumers of every feed, live, in a thread of their own: connected to ``servers[0]``
    first (reconnecting to the others when it dies), records decoded into ``got[feed]`` as they arrive."""

    def __init__(self, servers, feeds):
        self.servers, self.got = servers, {feed: [] for feed in feeds}
        self.port, self.reconnected, self.error = 0, 0, None
        self.ready, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            asyncio.run(self._main())
        except BaseException as err:                         # noqa: BLE001 -- said by the test's assertion
            self.error = err
            self.ready.set()

    async def _main(self):
        from nats.js.api import DeliverPolicy

        async def reconnected():
            self.reconnected += 1
        nc = await nats.connect(servers=self.servers, dont_randomize=True, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.25, reconnected_cb=reconnected)
        try:
            js = nc.jetstream(timeout=5)
            for feed, recs in self.got.items():
                async def take(msg, recs=recs):
                    recs.append(R.decode(msg.data))
                for attempt in range(6):
                    try:                                     # idle heartbeat 1 s: resumes 2 s after its node died
                        await js.subscribe(R.feed_filter(feed), ordered_consumer=True, cb=take, idle_heartbeat=1,
                                           deliver_policy=DeliverPolicy.ALL)
                        break
                    except nats.errors.TimeoutError:
                        if attempt == 5:
                            raise
            self.port = nc.connected_url.port
            self.ready.set()
            while not self.stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await nc.close()

    def wait_for(self, counts: dict, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(len(self.got[feed]) < n for feed, n in counts.items()):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, \
                f"the live consumer has {({f: len(r) for f, r in self.got.items()})} records of {counts}"
            time.sleep(0.1)

    def close(self):
        self.stop.set()
        self.thread.join(10)


async def _replicas(url, feed) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream(timeout=5).stream_info(R.stream_name(feed))).config.num_replicas
    finally:
        await nc.close()


def test_node_killed_under_a_publisher_then_publisher_restarted(nodes):
    started = time.monotonic()
    for srv in nodes:
        srv.start()
    urls = [srv.url for srv in nodes]
    rng = random.Random(17)
    regions = [region(), region()]
    procs = [start_publisher(reg, urls, feed, replicas=3, ack_window=32, buffer_records=1 << 20)
             for reg, feed in zip(regions, FEEDS)]
    made = [rows(rng, 20000, 34_200_000_000_000) for _ in regions]

    def chunk(k):                                           # both feeds, 100 updates
        for reg, (bbo_rows, tape_rows) in zip(regions, made):
            n = len(tape_rows) / 200
            publish(reg, bbo_rows[k * 100:(k + 1) * 100], tape_rows[round(k * n):round((k + 1) * n)])

    def feed_rows():                                        # the rest, 100 updates every 5 ms: a backlog
        for k in range(1, 200):
            chunk(k)
            time.sleep(0.005)
    chunk(0)                                                # both streams made (R3) and taking records
    for reg in regions:
        wait(lambda: own(reg, 0, "acknowledged") > 20, 30, "the first acknowledgements")
    port = own(regions[0], 0, "server_port")
    victim, = [srv for srv in nodes if srv.port == port]
    live = LiveConsumer([victim.url] + [srv.url for srv in nodes if srv is not victim], FEEDS)
    sender = threading.Thread(target=feed_rows)
    try:
        assert live.ready.wait(30) and live.error is None, live.error
        assert live.port == port                            # the consumer is on the node about to die
        sender.start()
        wait(lambda: all(own(reg, 0, "acknowledged") > 400 for reg in regions), 30, "records flowing")
        wait(lambda: all(live.got[feed] for feed in FEEDS), 30, "the live consumer receiving")
        acked_before = [own(reg, 0, "acknowledged") for reg in regions]
        seen_before = {feed: len(recs) for feed, recs in live.got.items()}
        victim.kill()                                       # mid-stream: the first publisher's and the consumer's node
    finally:
        if sender.ident is not None:
            sender.join()
    try:
        wait(lambda: own(regions[0], 0, "server_port") not in (0, port), 20, "the publisher on another node")
        reports = []
        for proc in procs:
            assert proc.finish() == 0
            reports.append(proc.report())
        for rep, before in zip(reports, acked_before):
            assert rep["dropped"] == 0 and rep["unacknowledged_at_exit"] == 0 and rep["ring_lost"] == 0, rep
            assert rep["acknowledged"] == rep["sent"] > before
        assert reports[0]["reconnected"] >= 1               # it did fail over (what it resent depends on timing)

        again = region()                                    # the first feed's publisher, started again
        proc = start_publisher(again, urls, FEEDS[0], replicas=3)
        bbo_rows, tape_rows = rows(rng, 1000, 36_000_000_000_000)
        publish(again, bbo_rows, tape_rows)
        assert proc.finish() == 0
        reports.append(proc.report())
        assert reports[2]["acknowledged"] == reports[2]["sent"] and reports[2]["unacknowledged_at_exit"] == 0
        live.wait_for({FEEDS[0]: reports[0]["sent"] + reports[2]["sent"], FEEDS[1]: reports[1]["sent"]}, 30)
    finally:
        live.close()
    assert live.reconnected >= 1 and live.error is None, live.error
    assert all(0 < seen_before[feed] < len(live.got[feed]) for feed in FEEDS), (seen_before, live.got.keys())

    alive = next(srv for srv in nodes if srv is not victim)
    got = asyncio.run(_consume(alive.url))
    assert set(got) == set(FEEDS)
    assert got == live.got                                  # live through the failover = the stored streams
    assert asyncio.run(_replicas(alive.url, FEEDS[0])) == 3
    trackers = {feed: client.SequenceTracker() for feed in FEEDS}
    for feed, recs in got.items():
        for rec in recs:
            trackers[feed].observe(rec, feed)
    assert trackers[FEEDS[1]].events == []                  # continuous, one publisher
    epochs = trackers[FEEDS[0]].events
    assert [(e.kind, e.first, e.last) for e in epochs] == [("epoch", 1, reports[0]["sent"])], [e.text for e in epochs]
    assert epochs[0].publisher == int(reports[2]["publisher"], 16)
    first = [r for r in got[FEEDS[0]] if r.publisher == int(reports[0]["publisher"], 16)]
    assert [r.sequence for r in first] == list(range(1, reports[0]["sent"] + 1))     # nothing acknowledged missing
    assert len(got[FEEDS[1]]) == reports[1]["sent"] and len(got[FEEDS[0]]) == reports[0]["sent"] + reports[2]["sent"]
    assert record_trades(first) == tape_trades(made[0][1])
    assert record_trades(got[FEEDS[1]]) == tape_trades(made[1][1])
    assert record_trades(got[FEEDS[0]][len(first):]) == tape_trades(tape_rows)
    for reg in (*regions, again):
        reg.close()
    assert time.monotonic() - started < 90


async def _refuses_out_of_order(url) -> list[dict]:
    """What the publisher's ordering rests on, asked of the replicated stream: a record whose predecessor is not
    the stream's last is refused, its predecessor is then taken, and a copy is acknowledged as a duplicate."""
    import json
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(name="md_order", subjects=["md.order.>"], num_replicas=3)
        answers = []
        for seq in (1, 3, 2, 3, 2):
            headers = {"Nats-Msg-Id": f"p-{seq}"}
            if seq > 1:
                headers["Nats-Expected-Last-Msg-Id"] = f"p-{seq - 1}"
            reply = await nc.request("md.order._status", b"x", timeout=5, headers=headers)
            answers.append(json.loads(reply.data))
        return answers
    finally:
        await nc.close()


def test_replicated_stream_refuses_a_record_ahead_of_its_predecessor(nodes):
    for srv in nodes:
        srv.start()
    deadline = time.monotonic() + 30
    while True:                                             # the cluster elects its JetStream leader first
        try:
            answers = asyncio.run(_refuses_out_of_order(nodes[0].url))
            break
        except Exception:                                   # noqa: BLE001 -- not ready yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert ["error" in a for a in answers] == [False, True, False, False, False], answers
    assert [a["seq"] for a in answers if "error" not in a] == [1, 2, 3, 2]
    assert answers[4].get("duplicate") is True and not answers[3].get("duplicate")
