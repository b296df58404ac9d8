"""plan, apply, verify and revert.

apply writes a setting only when it differs from its target, checks that the value stuck, and records the
value it replaced in the state file *before* writing.  When a step fails, everything this run changed is
put back in reverse order (and the state file restored) before the error goes up: a failed apply leaves the
host as it found it.  verify re-reads what the state file lists; revert restores the saved values backwards.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioning.accessors import rebuild
from provisioning.context import Context
from provisioning.errors import ApplyError, ProvisioningError, StateError, Unsupported
from provisioning.host import Host
from provisioning.knobs import ORDER, build
from provisioning.knobs.boot import reboot_cmdline
from provisioning.settings import CHANGE, CHANGED, OK, UNSUPPORTED, Accessor, Setting
from provisioning.state import Entry, State, load_state, locked, remove_state, save_state


class WriteFailed(ProvisioningError):
    """A write raised, or read back something other than what was written."""


@dataclass
class ApplyResult:
    rows: list[Setting]
    state_path: Path
    dry_run: bool
    reloaded: bool = False

    @property
    def changed(self) -> list[Setting]:
        return [s for s in self.rows if s.status in (CHANGED, CHANGE)]

    @property
    def reboot_cmdline(self) -> str:
        return reboot_cmdline(self.rows)


@dataclass
class Check:
    key: str
    where: str
    current: Any
    target: Any
    at_least: bool
    drift: bool
    note: str = ""


@dataclass
class RevertResult:
    restored: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    reloaded: bool = False


def plan(ctx: Context) -> list[Setting]:
    rows: list[Setting] = []
    for name, builder in ORDER:
        rows += build(ctx, name, builder)
    return rows


def _write_checked(accessor: Accessor, value: Any, at_least: bool, dry_run: bool) -> None:
    try:
        accessor.write(value)
    except Unsupported:
        raise
    except OSError as err:
        raise WriteFailed(f"writing {accessor.show(value)} to {accessor.where()} failed: "
                          f"{err.strerror or err}") from err
    if dry_run:
        return
    now = accessor.read()
    if not accessor.same(now, value, at_least):
        raise WriteFailed(f"{accessor.where()} reads back {accessor.show(now)} after writing {accessor.show(value)}")


def _restore(accessor: Accessor, old: Any, dry_run: bool = False) -> bool:
    """Put ``old`` back if the value differs; ``True`` when something was written."""
    if accessor.same(accessor.read(), old):
        return False
    _write_checked(accessor, old, False, dry_run)
    return True


def _restore_collateral(host: Host, snapshot: list[dict]) -> None:
    for item in snapshot:
        accessor = rebuild(host, item["locator"])
        try:
            current = accessor.read()
        except (Unsupported, OSError):
            continue  # the queue or vector does not exist (any more); nothing to put back
        if not accessor.same(current, item["old"]):
            _write_checked(accessor, item["old"], False, host.dry_run)


def _snapshot(accessor: Accessor) -> list[dict]:
    out = []
    for other in accessor.collateral():
        try:
            out.append({"locator": other.locator(), "old": other.read()})
        except (Unsupported, OSError):
            continue
    return out


def _rollback(host: Host, undo: list[tuple[Accessor, Any, list[dict]]]) -> list[str]:
    errors = []
    for accessor, old, snapshot in reversed(undo):
        try:
            _restore(accessor, old, host.dry_run)
            _restore_collateral(host, snapshot)
        except Exception as err:  # keep undoing the rest; every failure is reported
            errors.append(f"{accessor.where()}: {err}")
    return errors


def _check_owner(existing: State | None, ctx: Context, path: Path) -> None:
    if existing is None:
        return
    ifaces = [t.iface for t in ctx.targets]
    if existing.profile_ref != ctx.profile.reference or existing.interfaces != ifaces:
        raise StateError(f"{path} already holds a tuning ({existing.describe()}): "
                         "run 'appliance tune revert' before applying a different one")


def _record(state: State, s: Setting) -> tuple[Entry, bool]:
    entry = state.entry(s.key)
    if entry is None:
        entry = Entry(s.knob, s.key, s.accessor.locator(), s.current, s.target, s.at_least)
        state.entries.append(entry)
        return entry, True
    entry.locator, entry.target, entry.at_least = s.accessor.locator(), s.target, s.at_least
    return entry, False


def _apply_one(s: Setting, state: State, path: Path, host: Host, undo: list) -> None:
    """Record, then write, one setting that needs a change; an unsupported write leaves no trace."""
    entry, new = _record(state, s)
    snapshot = _snapshot(s.accessor)
    if new:
        entry.collateral = snapshot
    if not host.dry_run:
        save_state(path, state)  # write-ahead: the old value is on disk before the write
    # Undo is armed before the write: a write that fails its read-back check may still have changed the
    # value (a partial hugepage allocation), and rollback must cover it.
    undo.append((s.accessor, s.current, snapshot))
    try:
        _write_checked(s.accessor, s.target, s.at_least, host.dry_run)
    except Unsupported as err:
        undo.pop()
        s.status, s.note = UNSUPPORTED, str(err)
        if new:
            state.entries.remove(entry)
        return
    s.status = CHANGE if host.dry_run else CHANGED


def apply(ctx: Context, state_path: str | Path) -> ApplyResult:
    """Apply the profile; holds the state file's lock unless this is a dry run."""
    if ctx.host.dry_run:
        return _apply(ctx, Path(state_path))
    with locked(state_path):
        return _apply(ctx, Path(state_path))


def _apply(ctx: Context, path: Path) -> ApplyResult:
    host = ctx.host
    existing = load_state(path, host.fs)
    _check_owner(existing, ctx, path)
    state = copy.deepcopy(existing) if existing else State(
        ctx.profile.name, ctx.profile.reference, [t.iface for t in ctx.targets],
        {t.iface: t.cores for t in ctx.targets})
    before = copy.deepcopy(state.entries)
    result = ApplyResult([], path, host.dry_run)
    undo: list[tuple[Accessor, Any, list[dict]]] = []
    step = "planning"
    try:
        for name, builder in ORDER:
            step = name
            for s in build(ctx, name, builder):
                result.rows.append(s)
                if s.accessor is None or s.status not in (OK, CHANGE):
                    continue
                step = s.key
                if s.status == OK:
                    _record(state, s)  # verify checks it too, revert finds it at its old value
                else:
                    _apply_one(s, state, path, host, undo)
    except BaseException as err:
        errors = _rollback(host, undo)
        if not host.dry_run:
            if existing is None:
                remove_state(path)
            else:
                save_state(path, existing)
        if not isinstance(err, Exception):
            raise
        raise ApplyError(f"{step}: {err}; everything this run changed was rolled back"
                         if not errors else f"{step}: {err}; rolling back failed for {len(errors)} value(s)",
                         errors) from err
    if not host.dry_run and state.entries != before:
        save_state(path, state)
    if any(s.knob == "persist" and s.status == CHANGED for s in result.rows):
        result.reloaded = host.services.daemon_reload()
    return result


def verify(host: Host, state_path: str | Path) -> tuple[State, list[Check]]:
    state = load_state(state_path, host.fs)
    if state is None:
        raise StateError(f"nothing to verify: no tuning has been applied (no state file at {state_path})")
    checks = []
    for entry in state.entries:
        accessor = rebuild(host, entry.locator)
        try:
            current = accessor.read()
        except (Unsupported, OSError, LookupError) as err:
            checks.append(Check(entry.key, accessor.where(), None, entry.target, entry.at_least, True, str(err)))
            continue
        drift = not accessor.same(current, entry.target, entry.at_least)
        checks.append(Check(entry.key, accessor.where(), current, entry.target, entry.at_least, drift))
    return state, checks


def revert(host: Host, state_path: str | Path) -> tuple[State, RevertResult]:
    """Restore the saved values, newest first; holds the state file's lock unless this is a dry run."""
    if host.dry_run:
        return _revert(host, state_path)
    with locked(state_path):
        return _revert(host, state_path)


def _revert(host: Host, state_path: str | Path) -> tuple[State, RevertResult]:
    state = load_state(state_path, host.fs)
    if state is None:
        raise StateError(f"nothing to revert: no tuning has been applied (no state file at {state_path})")
    result, remaining = RevertResult(), []
    for entry in reversed(state.entries):
        accessor = rebuild(host, entry.locator)
        try:
            if _restore(accessor, entry.old, host.dry_run):
                result.restored.append(entry.key)
            else:
                result.unchanged += 1
            _restore_collateral(host, entry.collateral)
        except (ProvisioningError, OSError, LookupError, ValueError) as err:
            result.failed.append((entry.key, str(err)))
            remaining.insert(0, entry)
    if any(e.knob == "persist" for e in state.entries) and result.restored:
        result.reloaded = host.services.daemon_reload()
    if host.dry_run:
        return state, result
    if remaining:
        state.entries = remaining
        save_state(state_path, state)
    else:
        remove_state(state_path)
    return state, result
