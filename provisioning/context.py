"""What one tuning run is about: the host, the profile, and each capture interface with its cores.

:func:`resolve` is where interfaces are refused: one that was not named (tune never guesses), one that does
not exist, and one that carries the default route unless the operator says it really is the capture port.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from provisioning.errors import TargetError
from provisioning.host import Host
from provisioning.limits import cpulist_problem
from provisioning.profile import Profile
from provisioning.settings import Setting
from provisioning.topology import format_cpulist, parse_cpulist


@dataclass
class Target:
    """One capture interface."""

    iface: str
    node: int | None      # the NIC's NUMA node; None when unknown (virtual NIC, no NUMA)
    cores: list[int]      # capture cores; queue i is served by cores[i % len(cores)]
    queues: int           # queues wanted, before the driver's maximum caps it


@dataclass
class Context:
    host: Host
    profile: Profile
    targets: list[Target]
    persist: bool = False
    boot_command: list[str] | None = None   # argv of the boot unit's ExecStart
    # Queue counts per interface after the channels knob ({"rx": n, "tx": n}); later knobs only touch
    # queues below these counts.  Empty when channels are not being changed.
    planned: dict[str, dict[str, int]] = field(default_factory=dict)
    built: list[Setting] = field(default_factory=list)  # settings built so far in this run, in order

    @property
    def all_cores(self) -> list[int]:
        return sorted({c for t in self.targets for c in t.cores})

    def planned_count(self, iface: str, kind: str) -> int | None:
        return self.planned.get(iface, {}).get(kind)


def _cores_from(spec, topo, node: int | None, iface: str) -> list[int]:
    if spec in (None, "auto"):
        cores = topo.default_capture_cores(node)
        if not cores:
            where = f"NUMA node {node}" if node is not None else "this machine"
            raise TargetError(f"{where} has no CPU for capture besides CPU 0's core: name cores with --cores")
        return cores
    if isinstance(spec, str) and cpulist_problem(spec):
        raise TargetError(f"capture cores for {iface}: {cpulist_problem(spec)}")
    cores = parse_cpulist(spec) if isinstance(spec, str) else sorted(set(spec))
    online = set(topo.online_cpus())
    offline = [c for c in cores if c not in online]
    if offline:
        raise TargetError(f"capture cores {format_cpulist(offline)} for {iface} are not online CPUs")
    if not cores:
        raise TargetError(f"the capture core list for {iface} is empty")
    return cores


def resolve(host: Host, profile: Profile, ifaces: list[str] | None = None, cores: str | None = None,
            allow_default_route: bool = False) -> list[Target]:
    """The capture targets: interfaces from ``ifaces`` (the command line) or else from the profile."""
    names = list(dict.fromkeys(ifaces or profile.capture.get("interfaces") or []))
    if not names:
        raise TargetError("no capture interface named: pass --iface IF (tune never guesses one)")
    topo = host.topo
    routed = topo.default_route_interfaces()
    targets = []
    for name in names:
        if not topo.exists(name):
            known = ", ".join(n for n in topo.interfaces() if n != "lo") or "none"
            raise TargetError(f"interface {name!r} does not exist (interfaces here: {known})")
        if name == "lo":
            raise TargetError("lo is the loopback interface, not a capture port")
        if name in routed and not allow_default_route:
            raise TargetError(f"{name} carries the default route, so tuning it could cut this host off: "
                              "pass --allow-default-route if it really is the capture port")
        node = topo.nic_node(name)
        chosen = _cores_from(cores if cores is not None else profile.capture.get("cores"), topo, node, name)
        wanted = profile.capture.get("queues", "auto")
        targets.append(Target(name, node, chosen, len(chosen) if wanted == "auto" else int(wanted)))
    return targets
