"""What ``appliance tune`` prints: aligned tables for people, plain dicts for ``--json``."""
from __future__ import annotations

from collections import Counter

from provisioning.settings import CHANGE, CHANGED, DISABLED, OK, REBOOT, UNSUPPORTED, Setting
from provisioning.topology import format_cpulist

_WIDTH = 34  # longest value shown in a table cell; --json has the full values


def _cell(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _WIDTH else text[:_WIDTH - 3] + "..."


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns; the last column is not padded or truncated (it holds the sentences)."""
    cells = [[_cell(c) for c in row[:-1]] + [row[-1]] for row in rows]
    widths = [max([len(headers[i])] + [len(r[i]) for r in cells]) for i in range(len(headers) - 1)]
    lines = []
    for row in [headers] + cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _targets_text(ctx) -> str:
    lines = [f"profile {ctx.profile.name}: {ctx.profile.description}"]
    for t in ctx.targets:
        node = "unknown" if t.node is None else str(t.node)
        lines.append(f"{t.iface}: NUMA node {node}, capture cores {format_cpulist(t.cores)}, "
                     f"{t.queues} queue{'s' if t.queues != 1 else ''} wanted")
    return "\n".join(lines) + "\n"


def _why(s: Setting) -> str:
    return s.note if s.status in (UNSUPPORTED, REBOOT, DISABLED) or (s.note and s.status != OK) else s.reason


def _summary(rows: list[Setting]) -> str:
    counts = Counter(s.status for s in rows)
    parts = [f"{counts[k]} {label}" for k, label in (
        (CHANGE, "to change"), (CHANGED, "changed"), (OK, "already at target"), (UNSUPPORTED, "unsupported"),
        (REBOOT, "need a reboot"), (DISABLED, "disabled")) if counts[k]]
    return f"{len(rows)} settings: " + ", ".join(parts)


def _reboot_line(rows: list[Setting]) -> str:
    from provisioning.knobs.boot import reboot_cmdline

    line = reboot_cmdline(rows)
    return f"kernel command line to add, then reboot: {line}\n" if line else ""


def plan_text(ctx, rows: list[Setting]) -> str:
    body = table(["KNOB", "SETTING", "CURRENT", "TARGET", "STATUS", "WHY"],
                 [[s.knob, s.key, s.show_current(), s.show_target(), s.status, _why(s)] for s in rows])
    return _targets_text(ctx) + "\n" + body + "\n" + _summary(rows) + "\n" + _reboot_line(rows)


def _targets_json(ctx) -> list[dict]:
    return [{"iface": t.iface, "numa_node": t.node, "cores": t.cores, "queues": t.queues} for t in ctx.targets]


def plan_json(ctx, rows: list[Setting]) -> dict:
    from provisioning.knobs.boot import reboot_cmdline

    return {"profile": ctx.profile.name, "profile_source": ctx.profile.source, "targets": _targets_json(ctx),
            "settings": [s.row() for s in rows], "summary": dict(Counter(s.status for s in rows)),
            "reboot_cmdline": reboot_cmdline(rows)}


def _dry_run_writes(host) -> list[str]:
    lines = [f"write {w.new!r} to {host.fs.show(w.path)} (now {w.old!r})" for w in host.fs.journal]
    for name, iface, params in getattr(host.nic, "calls", []):
        lines.append(f"ethtool {name} {iface} " + " ".join(f"{k}={v}" for k, v in params.items()))
    return lines


def apply_text(ctx, result, host) -> str:
    out = []
    verb = "would change" if result.dry_run else "changed"
    for s in result.rows:
        if s.status in (CHANGE, CHANGED):
            out.append(f"{verb} {s.key}: {s.show_current()} -> {s.show_target()}")
        elif s.status == UNSUPPORTED:
            out.append(f"unsupported {s.key}: {s.note}")
    if result.dry_run:
        out += ["", "dry run, nothing was written; the writes would be:"] + ["  " + w for w in _dry_run_writes(host)]
    changed = len(result.changed)
    at_target = sum(1 for s in result.rows if s.status == OK)
    if changed == 0:
        out.append(f"nothing to change: all {at_target} supported settings are already at target "
                   f"(profile {ctx.profile.name})")
    elif not result.dry_run:
        out.append(f"applied {changed} change{'s' if changed != 1 else ''} (profile {ctx.profile.name}), "
                   f"{at_target} already at target; old values saved in {result.state_path}")
    if result.reloaded:
        out.append("systemd reloaded its unit files")
    return "\n".join(out) + "\n" + _reboot_line(result.rows)


def apply_json(ctx, result, host) -> dict:
    data = {"profile": ctx.profile.name, "targets": _targets_json(ctx), "dry_run": result.dry_run,
            "state": str(result.state_path), "changed": [s.row() for s in result.changed],
            "settings": [s.row() for s in result.rows], "summary": dict(Counter(s.status for s in result.rows)),
            "reboot_cmdline": result.reboot_cmdline, "systemd_reloaded": result.reloaded}
    if result.dry_run:
        data["writes"] = _dry_run_writes(host)
    return data


def verify_text(state, checks) -> str:
    rows = [["drift" if c.drift else "ok", c.key, _show(c.current), (">= " if c.at_least else "") + _show(c.target),
             c.note or c.where] for c in checks]
    body = table(["STATUS", "SETTING", "NOW", "APPLIED", "WHERE"], rows)
    drifted = sum(c.drift for c in checks)
    tail = (f"{drifted} of {len(checks)} settings drifted from the applied plan ({state.describe()})"
            if drifted else f"all {len(checks)} settings match the applied plan ({state.describe()})")
    return body + tail + "\n"


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return "running" if value.get("active") else "stopped"
    if isinstance(value, str) and "\n" in value:
        return f"{value.count(chr(10))} lines"
    return "-" if value is None else str(value)


def verify_json(state, checks) -> dict:
    return {"profile": state.profile, "interfaces": state.interfaces,
            "drift": [c.__dict__ for c in checks if c.drift], "ok": sum(not c.drift for c in checks),
            "checked": len(checks)}


def revert_text(state, result, host) -> str:
    verb = "would restore" if host.dry_run else "restored"
    out = [f"{verb} {key}" for key in result.restored]
    out += [f"could not restore {key}: {why}" for key, why in result.failed]
    if host.dry_run:
        out += ["", "dry run, nothing was written; the writes would be:"] + ["  " + w for w in _dry_run_writes(host)]
    out.append(f"{verb} {len(result.restored)} settings of {state.describe()}, {result.unchanged} already held "
               "their saved values" + ("; the state file is kept for the failures above" if result.failed else ""))
    return "\n".join(out) + "\n"


def revert_json(state, result, host) -> dict:
    return {"profile": state.profile, "interfaces": state.interfaces, "dry_run": host.dry_run,
            "restored": result.restored, "unchanged": result.unchanged,
            "failed": [{"key": k, "error": e} for k, e in result.failed], "systemd_reloaded": result.reloaded}
