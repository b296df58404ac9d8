"""``appliance tune plan|apply|verify|revert``: host tuning for capture, shown, applied, checked, undone.

A thin layer over :mod:`provisioning`: parse options, build the host and the context, print a table or
JSON.  Provisioning errors become one-sentence :class:`UserError`\\ s here, at the boundary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from appliance.errors import NeedsPrivilege, RunFailed, UserError

ACTIONS = {
    "plan": "show each knob's current value, target and reason without changing anything",
    "apply": "apply the plan, saving the old values in the state file (idempotent; rolls back on failure)",
    "verify": "re-read everything the last apply set and report drift (exit 1 on drift)",
    "revert": "restore exactly the values saved by apply, and remove what --persist wrote",
}


NeedsRoot = NeedsPrivilege


class TuneFailed(RunFailed):
    pass


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in ACTIONS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name in ("plan", "apply"):
            p.add_argument("--profile", default="latency",
                           help="built-in profile (latency, throughput) or a TOML file (default: latency)")
            p.add_argument("--iface", action="append", metavar="IF",
                           help="capture interface; repeat for several (default: the profile's interfaces)")
            p.add_argument("--cores", help="capture CPU list such as 4-7 (default: the profile's, else auto)")
            p.add_argument("--allow-default-route", action="store_true",
                           help="allow tuning an interface that carries the default route")
        if name == "apply":
            p.add_argument("--persist", action="store_true",
                           help="also write a sysctl.d drop-in and a systemd unit that re-applies at boot")
        if name in ("apply", "revert"):
            p.add_argument("--dry-run", action="store_true", help="show the exact writes without making them")
        if name != "plan":
            p.add_argument("--state", help="state file (default: /var/lib/appliance/tune-state.json)")
        # --root points sysfs, procfs and /etc at a copy of the tree: for tests, not for operators.
        p.add_argument("--root", default="/", help=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def make_host(root: str, dry_run: bool):
    from provisioning import Host

    return Host.live(root, dry_run=dry_run)


def run(args) -> int:
    from provisioning import ProfileError, ProvisioningError, TargetError

    if args.action in ("apply", "revert") and not getattr(args, "dry_run", False):
        _need_root(args)
    host = make_host(args.root, getattr(args, "dry_run", False))
    try:
        return _ACTIONS[args.action](args, host)
    except (ProfileError, TargetError) as err:  # a bad profile or command line, whatever the action: exit 2
        raise UserError(str(err)) from err
    except ProvisioningError as err:
        failed = getattr(err, "rollback_errors", None)
        for line in failed or []:
            print(f"appliance: rollback: {line}", file=sys.stderr)
        raise (TuneFailed if args.action == "apply" else UserError)(str(err)) from err
    finally:
        host.close()


def _need_root(args) -> None:
    if os.geteuid() != 0 and Path(args.root).resolve() == Path("/"):
        raise NeedsRoot(f"tune {args.action} changes kernel settings and must run as root (try: sudo appliance "
                        f"tune {args.action} ...)")


def _state_path(args, host) -> Path:
    from provisioning import DEFAULT_STATE

    return Path(args.state) if args.state else host.fs.path(DEFAULT_STATE)


def _context(args, host, persist: bool = False):
    from provisioning import Context, load, resolve

    profile = load(args.profile)
    targets = resolve(host, profile, args.iface, args.cores, args.allow_default_route)
    ctx = Context(host, profile, targets, persist=persist)
    if persist:
        ctx.boot_command = _boot_command(args, profile, targets, _state_path(args, host))
    return ctx


def _boot_command(args, profile, targets, state: Path) -> list[str]:
    cmd = [sys.executable, "-m", "appliance", "tune", "apply", "--profile", profile.reference]
    for t in targets:
        cmd += ["--iface", t.iface]
    if args.cores:
        cmd += ["--cores", args.cores]
    if args.allow_default_route:
        cmd.append("--allow-default-route")
    return cmd + ["--state", str(state.resolve())]


# -- actions -----------------------------------------------------------------------------------------------
def _plan(args, host) -> int:
    from provisioning import plan, report

    ctx = _context(args, host)
    rows = plan(ctx)
    _emit(args, report.plan_json(ctx, rows), lambda: report.plan_text(ctx, rows))
    return 0


def _apply(args, host) -> int:
    from provisioning import apply, report

    ctx = _context(args, host, persist=args.persist)
    result = apply(ctx, _state_path(args, host))
    _emit(args, report.apply_json(ctx, result, host), lambda: report.apply_text(ctx, result, host))
    return 0


def _verify(args, host) -> int:
    from provisioning import report, verify

    state, checks = verify(host, _state_path(args, host))
    _emit(args, report.verify_json(state, checks), lambda: report.verify_text(state, checks))
    return 1 if any(c.drift for c in checks) else 0


def _revert(args, host) -> int:
    from provisioning import report, revert

    state, result = revert(host, _state_path(args, host))
    _emit(args, report.revert_json(state, result, host), lambda: report.revert_text(state, result, host))
    return 1 if result.failed else 0


_ACTIONS = {"plan": _plan, "apply": _apply, "verify": _verify, "revert": _revert}


def _emit(args, data: dict, text) -> None:
    if args.json:
        json.dump(data, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text())
