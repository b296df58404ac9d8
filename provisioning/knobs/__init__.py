"""The knobs, in the order apply runs them.

The order is load-bearing: irqbalance stops before any affinity is written (or it would undo them); the
channel count changes before anything per queue or per interrupt is planned (it creates and deletes
queues); persistence comes last so it records what the rest decided.  Revert runs the state file backwards.
"""
from __future__ import annotations

from typing import Callable

from provisioning.context import Context
from provisioning.knobs import boot, nic, queues, system
from provisioning.settings import Setting, disabled

Builder = Callable[[Context, dict], list[Setting]]

ORDER: list[tuple[str, Builder]] = [
    ("irqbalance", system.irqbalance),
    ("channels", nic.channels),
    ("rings", nic.rings),
    ("coalesce", nic.coalesce),
    ("offloads", nic.offloads),
    ("pause", nic.pause),
    ("irq_affinity", queues.irq_affinity),
    ("rps_xps", queues.rps_xps),
    ("napi", queues.napi),
    ("sysctl", system.sysctl),
    ("hugepages", system.hugepages),
    ("governor", system.governor),
    ("thp", system.thp),
    ("boot", boot.boot),
    ("persist", boot.persist),
]


def build(ctx: Context, name: str, builder: Builder) -> list[Setting]:
    """One knob's settings, each read and given its status.  A knob the profile leaves out is not run."""
    if name == "persist":
        cfg = {"reason": boot.PERSIST_REASON}
    elif name not in ctx.profile.knobs:
        return []
    else:
        cfg = ctx.profile.knob(name)
        if not cfg.get("enabled", True):
            return [disabled(name, cfg["reason"])]
    rows = [setting.evaluate() for setting in builder(ctx, cfg)]
    ctx.built.extend(rows)
    return rows
