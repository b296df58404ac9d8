"""``appliance metrics --ready-file PATH``: serve a running capture's metrics, health and readiness over HTTP.

Attaches to the capture's shared region (the ``pid`` and ``rows_fd`` of its ``--ready-file``) without taking a
consumer slot, serves ``/metrics``, ``/healthz`` and ``/readyz`` (``appliance.service``) until the capture's
process ends, then ``--linger`` seconds more so a scraper gets the final counts.  SIGTERM or SIGINT ends it
early, cleanly (exit 0).  ``appliance serve`` will hold the same pieces in-process.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from appliance.errors import InputError, NeedsPrivilege, RunFailed

SAMPLE = 0.2                  # seconds between two looks at the capture (health samples, has it ended)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from appliance.service.http import DEFAULT_LISTEN

    parser.add_argument("--ready-file", required=True, metavar="PATH", help="the capture's --ready-file")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address to serve on, [IPv6]:PORT for IPv6 (default {DEFAULT_LISTEN})")
    parser.add_argument("--stale", type=_seconds, default=5.0, metavar="S",
                        help="/readyz fails when no feed frame came for S seconds (default 5)")
    parser.add_argument("--stall", type=_seconds, default=2.0, metavar="S",
                        help="/healthz fails when the receive loop has not turned for S seconds (default 2)")
    parser.add_argument("--disk", action="append", default=[], metavar="DIR",
                        help="export the free space of DIR's file system (repeatable)")
    parser.add_argument("--linger", type=_seconds, default=0.0, metavar="S",
                        help="keep serving S seconds after the capture ended (default 0)")


def _ready_info(path: str) -> dict:
    try:
        info = json.loads(open(path).read())
    except FileNotFoundError:
        raise InputError(f"no ready file at {path}: is the capture running with --ready-file {path}?") from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the ready file {path}: {err}") from None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
        raise InputError(f"{path} is not a capture's ready file (no pid)")
    if not isinstance(info.get("rows_fd"), int):
        raise InputError(f"the capture of {path} shares no row region (a --workers member?); nothing to attach")
    return info


def _attach(info: dict):
    from appliance.cold.rows import Region

    pid = info["pid"]
    try:
        return Region.open_pid(pid, info["rows_fd"])
    except FileNotFoundError:
        raise RunFailed(f"the capture (pid {pid}) is not running any more") from None
    except PermissionError:
        raise NeedsPrivilege(f"cannot open the region of the capture (pid {pid}): run as its user or root") from None
    except ValueError as err:
        raise RunFailed(f"descriptor {info['rows_fd']} of pid {pid} is {err}") from None


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from appliance.cold.rows import STATE_FINISHED
    from appliance.service.health import CaptureHealth, process_running
    from appliance.service.http import MetricsServer
    from appliance.service.metrics import CaptureCollector, ServiceMetrics

    info = _ready_info(args.ready_file)
    region = _attach(info)
    pid = info["pid"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CaptureCollector(region, pid=pid, interface=info.get("interface")))
    service = ServiceMetrics()
    for directory in args.disk:
        service.watch_disk(directory, "watched")
    registry.register(service)
    health = CaptureHealth(region, pid, stale=args.stale, stall=args.stall)
    stop = threading.Event()
    said = {}

    def on_signal(signum, _frame):
        said["signal"] = signum
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with MetricsServer(args.listen, registry, health.healthz, health.readyz) as server:
            print(f"serving the metrics of the capture (pid {pid}) on http://{server.address}/metrics",
                  file=sys.stderr, flush=True)
            while not stop.is_set() and process_running(pid):
                health.sample()
                stop.wait(SAMPLE)
            if not stop.is_set():
                health.sample()
                ended = "finished" if region.state == STATE_FINISHED else "ended without finishing"
                print(f"the capture (pid {pid}) {ended}", file=sys.stderr, flush=True)
                stop.wait(args.linger)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return 0
