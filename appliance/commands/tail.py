"""``appliance tail SUBJECT``: print the records a publisher put on NATS JetStream, live or from history.

Subscribes with an ordered consumer (the server replays the stream's history from where ``--since`` / ``--all``
says, then follows it live; a lost message makes the client re-create the consumer where it left off) to the
stream that holds SUBJECT (``md.<feed>.>`` for a whole feed, ``md.<feed>.<symbol>.<kind>`` for one series;
``appliance.publish.records`` documents the grammar) and prints one line per record, or its JSON form.

Sequence accounting (``client.SequenceTracker``): when SUBJECT takes a whole feed (``md.<feed>.>``), every record
a publisher sent passes here, so a hole in its sequence is a lost record, and a new publisher id a restart: both
are said on stderr, never silent.  A narrower subject sees only part of each publisher's sequence; the check is
then off (said once on stderr).

Ends on Ctrl-C or SIGTERM (exit 0), after ``--count`` records, or ``--idle`` seconds without a record (for a
history dump).  A server that cannot be reached, or a subject no stream holds: one sentence, exit 1 / 2.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import signal
import sys

from appliance.errors import RunFailed, UserError

DEFAULT_SERVER = "nats://127.0.0.1:4222"
CONNECT_S = 5.0                   # how long the first connection may take
_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> datetime.datetime:
    """``--since``: an ISO 8601 time (UTC unless it says otherwise) or an age like ``90s``, ``10m``, ``2h``, ``1d``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    m = _AGO.fullmatch(text.strip())
    if m:
        return now - datetime.timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since {text!r} is neither an ISO 8601 time nor an age like 10m") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subject", metavar="SUBJECT", help="NATS subject filter, e.g. 'md.itch.>' or 'md.itch.AAPL.bbo'")
    parser.add_argument("--server", action="append", metavar="URL",
                        help=f"NATS server (repeat for a cluster; default {DEFAULT_SERVER})")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", type=parse_since, metavar="TIME",
                       help="start at TIME: ISO 8601 (UTC by default) or an age like 10m")
    start.add_argument("--all", action="store_true", help="start at the stream's first record")
    parser.add_argument("--json", action="store_true", help="print each record as JSON")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N records")
    parser.add_argument("--idle", type=float, metavar="S", help="stop after S seconds without a record")


def whole_feed(subject: str) -> bool:
    """True when ``subject`` takes every record of the feeds it names (so each publisher's whole sequence)."""
    parts = subject.split(".")
    return subject == ">" or (len(parts) == 2 and parts[0] == "md" and parts[1] == ">") or \
        (len(parts) == 3 and parts[0] == "md" and parts[2] == ">")


def line(record, as_json: bool) -> str:
    from appliance.display import printable
    from appliance.publish import records as R

    if as_json:
        return R.to_json(record)
    fields = {k: v for k, v in R.to_dict(record).items() if k not in ("version", "kind", "publisher", "sequence",
                                                                        "locate", "symbol", "timestamp")}
    return printable(f"{record.publisher:016x}:{record.sequence} {R.KIND_NAMES[record.kind]} {record.timestamp} "
                     f"{record.symbol.rstrip() or '-'}({record.locate}) "
                     + " ".join(f"{k}={v}" for k, v in fields.items()))


async def _tail(args, out) -> int:
    import nats
    from nats.errors import NoServersError
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    from appliance.display import printable
    from appliance.publish import client, records as R

    servers = args.server or [DEFAULT_SERVER]
    errors: list[BaseException] = []

    async def quiet(err):                 # nats-py's default prints a traceback per failed attempt
        errors.append(err)

    closing = []

    async def disconnected():             # also called by close(): say it only when we did not ask for it
        if not closing:
            print("appliance: tail: disconnected from the NATS server; reconnecting", file=sys.stderr, flush=True)

    async def reconnected():
        print("appliance: tail: reconnected", file=sys.stderr, flush=True)

    try:                                  # reconnects go on for ever once connected; the first connect is bounded
        nc = await asyncio.wait_for(nats.connect(servers=servers, connect_timeout=2, max_reconnect_attempts=-1,
                                                 error_cb=quiet, disconnected_cb=disconnected,
                                                 reconnected_cb=reconnected), CONNECT_S)
    except (NoServersError, OSError, asyncio.TimeoutError) as err:
        why = errors[-1] if errors else err
        raise RunFailed(f"cannot reach a NATS server at {', '.join(servers)} within {CONNECT_S:g} s "
                        f"({str(why) or type(why).__name__})") from None
    try:
        js = nc.jetstream()
        try:
            stream = await js.find_stream_name_by_subject(args.subject)
        except NotFoundError:
            raise UserError(f"no JetStream stream holds {args.subject!r} on {', '.join(servers)}") from None
        if args.since is not None:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=args.since)
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL if args.all else DeliverPolicy.NEW)
        sub = await js.subscribe(args.subject, stream=stream, ordered_consumer=True, config=config)
        tracker = client.SequenceTracker() if whole_feed(args.subject) else None
        if tracker is None:
            print(f"appliance: tail: {printable(args.subject)} is not a whole feed (md.<feed>.>): publisher sequences "
                  f"are not checked", file=sys.stderr, flush=True)
        seen, bad = 0, 0
        while args.count is None or seen < args.count:
            try:
                msg = await sub.next_msg(timeout=args.idle if args.idle else 3600)
            except asyncio.TimeoutError:
                if args.idle:
                    break
                continue
            try:
                rec = R.from_json(msg.data) if msg.data[:1] == b"{" else R.decode(msg.data)
            except R.RecordError as err:
                bad += 1
                print(f"appliance: tail: {printable(msg.subject)}: not a record ({printable(str(err))})",
                      file=sys.stderr, flush=True)
                continue
            seen += 1
            if tracker is not None:
                for event in tracker.observe(rec, msg.subject.split(".")[1]):
                    print(f"appliance: tail: {printable(event.text)}", file=sys.stderr, flush=True)
            print(line(rec, args.json), file=out, flush=True)
        return 0
    finally:
        closing.append(True)
        await nc.close()


def run(args) -> int:
    loop = asyncio.new_event_loop()
    task = loop.create_task(_tail(args, sys.stdout))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 0
    except BrokenPipeError:
        return 0
    finally:
        loop.close()
