"""Per-queue and per-interface kernel knobs: IRQ affinity, RPS/XPS, NAPI deferral.

These run after the channels knob, so during apply they see the queues and interrupts the new channel
count left; during plan they are limited to the queue indexes that count will keep.  Only the capture
interface's own queues and its own device's vectors are ever listed.
"""
from __future__ import annotations

from provisioning.accessors import Attr, IrqAffinity
from provisioning.context import Context
from provisioning.irqs import interface_irqs
from provisioning.settings import Setting, unsupported
from provisioning.topology import format_cpumask


def _kept(ctx: Context, iface: str, kind: str, index: int) -> bool:
    limit = ctx.planned_count(iface, kind)
    return limit is None or index < limit


def queue_irqs(ctx: Context, iface: str):
    """The interface's queue vectors that the planned channel count keeps in use."""
    return [irq for irq in interface_irqs(ctx.host.fs, ctx.host.topo, iface)
            if irq.queue is not None and _kept(ctx, iface, "rx", irq.queue)]


def irq_affinity(ctx: Context, cfg: dict) -> list[Setting]:
    rows, fs = [], ctx.host.fs
    for t in ctx.targets:
        every = interface_irqs(fs, ctx.host.topo, t.iface)
        if not every:
            rows.append(unsupported("irq_affinity", f"{t.iface} irqs", cfg["reason"],
                                    f"{t.iface} has no interrupts of its own (a virtual interface)"))
            continue
        chosen = queue_irqs(ctx, t.iface)
        if not chosen:
            rows.append(unsupported("irq_affinity", f"{t.iface} irqs", cfg["reason"],
                                    f"none of {t.iface}'s {len(every)} interrupts is named like a queue"))
            continue
        for irq in chosen:
            core = t.cores[irq.queue % len(t.cores)]
            rows.append(Setting("irq_affinity", f"{t.iface} irq {irq.number} {irq.name}", cfg["reason"],
                                IrqAffinity(fs, irq.number, irq.name), target=str(core),
                                extra={"queue": irq.queue}))
    return rows


def _cleared(ctx: Context, iface: str, kind: str, attr: str, reason: str) -> list[Setting]:
    fs, rows = ctx.host.fs, []
    for queue in ctx.host.topo.queues(iface, kind):
        if not _kept(ctx, iface, kind, queue):
            continue
        path = f"/sys/class/net/{iface}/queues/{kind}-{queue}/{attr}"
        key = f"{iface} {kind}-{queue} {attr}"
        if not fs.exists(path):
            rows.append(unsupported("rps_xps", key, reason, f"{fs.show(path)} does not exist (no CONFIG_RPS/XPS)"))
            continue
        try:
            like = fs.read(path)
        except OSError as err:  # xps_cpus reads fail with ENOENT on devices that have no XPS map
            rows.append(unsupported("rps_xps", key, reason, f"{fs.show(path)} cannot be read: {err.strerror}"))
            continue
        rows.append(Setting("rps_xps", key, reason, Attr(fs, path, "cpumask"), target=format_cpumask(0, like)))
    return rows


def rps_xps(ctx: Context, cfg: dict) -> list[Setting]:
    rows = []
    for t in ctx.targets:
        rows += _cleared(ctx, t.iface, "rx", "rps_cpus", cfg["reason"])
        rows += _cleared(ctx, t.iface, "tx", "xps_cpus", cfg["reason"])
    return rows


def napi(ctx: Context, cfg: dict) -> list[Setting]:
    rows, fs = [], ctx.host.fs
    for t in ctx.targets:
        for option, attr in (("defer_hard_irqs", "napi_defer_hard_irqs"), ("gro_flush_timeout", "gro_flush_timeout"),
                             ("threaded", "threaded")):
            if option not in cfg:
                continue
            path = f"/sys/class/net/{t.iface}/{attr}"
            rows.append(Setting("napi", f"{t.iface} {attr}", cfg["reason"],
                                Attr(fs, path, "int", missing=f"{fs.show(path)} does not exist (kernel too old)"),
                                target=int(cfg[option])))
    return rows
