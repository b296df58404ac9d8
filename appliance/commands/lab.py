"""``appliance lab up|down``: a network namespace with a multi-queue veth pair to capture from and send into."""
from __future__ import annotations

import argparse

from appliance.errors import UserError


def _queues(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from appliance.capture import lab as L

    parser.add_argument("action", choices=("up", "down"),
                        help="up: create the lab (idempotent; an existing one is checked); down: delete it")
    parser.add_argument("--name", default=L.DEFAULT_NAME, metavar="NS",
                        help=f"network namespace name (default {L.DEFAULT_NAME})")
    parser.add_argument("--queues", type=_queues, default=None, metavar="N",
                        help=f"rx and tx queues on each side of the veth pair (default {L.DEFAULT_QUEUES}; "
                             "on an existing lab, given: must match, omitted: any)")


def run(args: argparse.Namespace) -> int:
    from appliance.capture import lab as L

    if args.action == "down" and args.queues is not None:
        raise UserError("--queues goes with 'up' only")
    lab = L.Lab(args.name, args.queues or L.DEFAULT_QUEUES)
    if args.action == "down":
        if lab.down():
            print(f"lab {lab.name}: deleted the network namespace and its veth pair")
        else:
            print(f"lab {lab.name}: no such network namespace, nothing to delete")
        return 0
    created = lab.up(check_queues=args.queues is not None)
    print(f"lab {lab.name}: {'created' if created else 'already up (shape checked)'}: {lab.describe()}")
    run_in = f"ip netns exec {lab.name}"
    print(f"  capture  {run_in} appliance capture --iface {L.CAPTURE_IF} ...")
    print(f"  send     {run_in} appliance replay pcaps/sample.pcap --send {L.SENDER_IF} --pps 20000")
    print(f"  look     {run_in} tcpdump -ni {L.CAPTURE_IF}")
    print(f"  remove   appliance lab down --name {lab.name}")
    return 0
