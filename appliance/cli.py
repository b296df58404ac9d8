"""The ``appliance`` command line.

One module per subcommand under ``appliance.commands``, imported only when that subcommand runs, so
``appliance --help`` does not pay for numpy or numba.  Each module provides ``add_arguments(parser)`` and
``run(args) -> int``.  Exceptions become exit codes here and nowhere else.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from appliance import __version__

COMMANDS = {
    "replay": "decode captures or NASDAQ day files into books, top of book, trades and VWAP",
    "generate": "write a synthetic ITCH 5.0 feed as pcap, pcapng or day file",
    "tune": "plan, apply, verify and revert host tuning for capture",
    "capture": "receive a live feed (AF_XDP or TPACKET_V3) and decode it as replay does",
    "validate": "send a capture through the lab, capture it live and compare with its offline replay",
    "lab": "create or delete a network namespace with a multi-queue veth pair to capture from and send into",
    "metrics": "serve a running capture's Prometheus metrics, /healthz and /readyz over HTTP",
    "serve": "run the capture appliance as a service: a capture per session, metrics, health, systemd notify",
    "config": "check the service's config file (/etc/appliance/appliance.toml) and print the effective config",
    "tail": "print the records published on NATS JetStream for a subject, live or from history",
    "warm": "compile (or load) every kernel a capture runs, so that its first start does not",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line gets one sentence and a pointer to --help, not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _top_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="appliance",
        description="Market-data capture appliance for NASDAQ TotalView-ITCH 5.0 over MoldUDP64.",
        epilog="commands:\n" + "\n".join(f"  {name:10s} {text}" for name, text in COMMANDS.items())
        + "\n\nRun 'appliance COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    parser.add_argument("command", nargs="?", choices=sorted(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv)          # handles --help / --version and exits
        print("appliance: a command is required (see 'appliance --help')", file=sys.stderr)
        return 2
    name = argv[0]
    if name not in COMMANDS:
        print(f"appliance: unknown command {name!r} (choose from {', '.join(sorted(COMMANDS))})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"appliance.commands.{name}")
    parser = _Parser(prog=f"appliance {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return run_guarded(module.run, args)


def run_guarded(func, *args) -> int:
    """Run a command body, turning the errors an operator can act on into one sentence and an exit code."""
    from appliance.display import printable
    from appliance.errors import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOPERM, UserError

    try:
        return int(func(*args) or 0)
    except UserError as err:
        print(f"appliance: {printable(str(err), backslashes=False)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("appliance: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE
    except PermissionError as err:
        print(f"appliance: permission denied: {err.filename or err} (run as root?)", file=sys.stderr)
        return EXIT_NOPERM
    except OSError as err:
        # The environment failed under us (a full disk under numba's kernel cache, an I/O error): one sentence.
        where = f" ({err.filename})" if err.filename else ""
        print(f"appliance: {err.strerror or err}{where}", file=sys.stderr)
        return EXIT_FAILED
