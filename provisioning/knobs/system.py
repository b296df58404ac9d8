"""Host-wide knobs: irqbalance, sysctls, hugepages, CPU governor, transparent hugepages."""
from __future__ import annotations

import shlex

from provisioning.accessors import Attr, ConfigFile, ServiceState
from provisioning.context import Context
from provisioning.irqs import interface_irqs
from provisioning.settings import Setting, unsupported
from provisioning.topology import format_cpulist

IRQBALANCE_DEFAULTS = "/etc/default/irqbalance"
_PAGE_DIRS = {"pages_2m": ("hugepages-2048kB", "2 MB"), "pages_1g": ("hugepages-1048576kB", "1 GB")}


def banned_config(text: str | None, cores: list[int], irqs: list[int]) -> str:
    """``/etc/default/irqbalance`` with the capture cores banned and the NIC's vectors left alone.

    Banning the cores alone is not enough: irqbalance would then move the capture interrupts *off* the
    banned cores, so each vector is also passed as ``--banirq``.  Other lines are kept as they were.
    """
    lines = (text or "").splitlines()
    args: list[str] = []
    kept = []
    for line in lines:
        name = line.split("=", 1)[0].strip()
        if name == "IRQBALANCE_BANNED_CPULIST":
            continue
        if name == "IRQBALANCE_ARGS":
            args = shlex.split(line.split("=", 1)[1])
            args = shlex.split(args[0]) if len(args) == 1 else args
            continue
        kept.append(line)
    for irq in irqs:
        if f"--banirq={irq}" not in args:
            args.append(f"--banirq={irq}")
    kept.append(f"IRQBALANCE_BANNED_CPULIST={format_cpulist(cores)}")
    kept.append(f"IRQBALANCE_ARGS={shlex.quote(' '.join(args))}" if args else 'IRQBALANCE_ARGS=""')
    return "\n".join(kept) + "\n"


def irqbalance_accessors(fs, services) -> tuple[ServiceState, ConfigFile]:
    """The daemon (mode ``stop``) and its defaults file (mode ``ban``): all the irqbalance knob may change."""
    return (ServiceState(services, "irqbalance"),
            ConfigFile(fs, IRQBALANCE_DEFAULTS, services, restart="irqbalance"))


def irqbalance(ctx: Context, cfg: dict) -> list[Setting]:
    host = ctx.host
    service, defaults = irqbalance_accessors(host.fs, host.services)
    if cfg.get("mode", "stop") == "stop":
        return [Setting("irqbalance", "irqbalance", cfg["reason"], service, target={"active": False})]
    vectors = sorted({irq.number for t in ctx.targets for irq in interface_irqs(host.fs, host.topo, t.iface)})
    current = host.fs.read_file(IRQBALANCE_DEFAULTS)
    return [Setting("irqbalance", "irqbalance bans", cfg["reason"], defaults,
                    target=banned_config(current, ctx.all_cores, vectors),
                    note=f"bans CPUs {format_cpulist(ctx.all_cores)} and IRQs {format_cpulist(vectors) or '-'}")]


def sysctl(ctx: Context, cfg: dict) -> list[Setting]:
    rows = []
    for name, spec in ctx.profile.sysctls.items():
        if not spec.get("enabled", True):
            continue
        path = "/proc/sys/" + name.replace(".", "/")
        accessor = Attr(ctx.host.fs, path, "int",
                        missing=f"{name} is not visible here (a global sysctl outside the host's network "
                                "namespace, or absent from this kernel)",
                        readonly=f"{name} is read-only here (inside a network namespace it mirrors the host)")
        rows.append(Setting("sysctl", name, spec["reason"], accessor, target=spec["value"],
                            at_least=spec.get("at_least", False)))
    return rows


def hugepages(ctx: Context, cfg: dict) -> list[Setting]:
    """Per NUMA node of the capture NICs, ``at least`` the profile's count: never shrink a pool."""
    fs, rows = ctx.host.fs, []
    nodes = sorted({t.node for t in ctx.targets}, key=lambda n: -1 if n is None else n)
    flags = ctx.host.topo.cpu_flags()
    for option, (subdir, label) in _PAGE_DIRS.items():
        count = cfg.get(option, 0)
        if not count:
            continue
        for node in nodes:
            where = "system-wide" if node is None else f"node {node}"
            key = f"hugepages {label} {where}"
            if option == "pages_1g" and "pdpe1gb" not in flags:
                rows.append(unsupported("hugepages", key, cfg["reason"], "this CPU has no 1 GB pages (pdpe1gb)"))
                continue
            base = "/sys/kernel/mm/hugepages" if node is None else f"/sys/devices/system/node/node{node}/hugepages"
            path = f"{base}/{subdir}/nr_hugepages"
            rows.append(Setting("hugepages", key, cfg["reason"],
                                Attr(fs, path, "int", missing=f"this kernel offers no {label} pages"),
                                target=count, at_least=True))
    return rows


def _policies(ctx: Context) -> dict[str, list[int]]:
    """cpufreq policy directory -> the capture cores it governs."""
    fs, found = ctx.host.fs, {}
    for cpu in ctx.all_cores:
        rel = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        if fs.exists(rel):
            found.setdefault(fs.resolve(rel), []).append(cpu)
    return found


def governor(ctx: Context, cfg: dict) -> list[Setting]:
    fs, rows, want = ctx.host.fs, [], cfg["governor"]
    policies = _policies(ctx)
    if not policies:
        return [unsupported("governor", "governor", cfg["reason"],
                            "no cpufreq driver on this host (usual in a virtual machine)")]
    for policy, cpus in sorted(policies.items()):
        key = f"governor {policy.rsplit('/', 1)[-1]} (cpus {format_cpulist(cpus)})"
        available = f"{policy}/scaling_available_governors"
        if fs.exists(available) and want not in fs.read(available).split():
            rows.append(unsupported("governor", key, cfg["reason"],
                                    f"the cpufreq driver offers {fs.read(available).strip()}, not {want}"))
            continue
        rows.append(Setting("governor", key, cfg["reason"], Attr(fs, f"{policy}/scaling_governor", "text"),
                            target=want))
    return rows


def thp(ctx: Context, cfg: dict) -> list[Setting]:
    fs, rows = ctx.host.fs, []
    for option, attr in (("mode", "enabled"), ("defrag", "defrag")):
        if option in cfg:
            path = f"/sys/kernel/mm/transparent_hugepage/{attr}"
            rows.append(Setting("thp", f"transparent hugepages {attr}", cfg["reason"],
                                Attr(fs, path, "select", missing="this kernel has no transparent hugepages"),
                                target=cfg[option]))
    return rows
