"""CPU, NUMA and interface topology, read from sysfs and procfs through :mod:`provisioning.hostfs`.

psutil's CPU functions read the live ``/proc`` and ``/sys`` (and psutil has no NUMA view), so they cannot be
pointed at a fake tree; the node and sibling lists come from sysfs here, through the one overridable root.
Also here: the kernel's two CPU-set notations, the list (``4-7,12``) and the hex mask (``00000000,000000f0``).
"""
from __future__ import annotations

import re

from provisioning.hostfs import HostFS

_NODE_DIR = re.compile(r"^node(\d+)$")


# -- the kernel's CPU-set notations -----------------------------------------------------------------------
def parse_cpulist(text: str) -> list[int]:
    """``"0-3,8,10-11"`` -> ``[0, 1, 2, 3, 8, 10, 11]``; an empty string is the empty set."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def format_cpulist(cpus) -> str:
    """The canonical form the kernel prints (``bitmap_print_to_pagebuf`` with list=true)."""
    out: list[str] = []
    run: list[int] = []
    for cpu in sorted(set(cpus)):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_cpumask(text: str) -> int:
    """``"00000000,000000f0"`` -> ``0xf0``."""
    digits = text.strip().replace(",", "")
    return int(digits, 16) if digits else 0


def format_cpumask(mask: int, like: str) -> str:
    """``mask`` in the layout of ``like`` (the kernel's width and 32-bit comma groups), so it reads back
    byte for byte the same."""
    groups = like.strip().split(",")
    width = sum(len(g) for g in groups)
    digits = format(mask, f"0{width}x")
    if len(digits) > width:
        raise ValueError(f"mask {mask:#x} has CPUs beyond the {width * 4} this kernel knows")
    out, pos = [], 0
    for group in groups:
        out.append(digits[pos:pos + len(group)])
        pos += len(group)
    return ",".join(out)


class Topology:
    """What the machine looks like: online CPUs, NUMA nodes, SMT siblings, interfaces and their queues."""

    def __init__(self, fs: HostFS):
        self.fs = fs

    # -- CPUs and nodes ------------------------------------------------------------------------------------
    def online_cpus(self) -> list[int]:
        return parse_cpulist(self.fs.read("/sys/devices/system/cpu/online"))

    def nodes(self) -> dict[int, list[int]]:
        """Node -> its online CPUs.  A kernel without NUMA has no node directory: one node 0 then."""
        online = set(self.online_cpus())
        nodes = {}
        for name in self.fs.listdir("/sys/devices/system/node"):
            match = _NODE_DIR.match(name)
            if match:
                cpus = parse_cpulist(self.fs.read(f"/sys/devices/system/node/{name}/cpulist"))
                nodes[int(match.group(1))] = [c for c in cpus if c in online]
        return nodes or {0: sorted(online)}

    def has_numa(self) -> bool:
        return any(_NODE_DIR.match(n) for n in self.fs.listdir("/sys/devices/system/node"))

    def thread_siblings(self, cpu: int) -> list[int]:
        rel = f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        return parse_cpulist(self.fs.read(rel)) if self.fs.exists(rel) else [cpu]

    def default_capture_cores(self, node: int | None) -> list[int]:
        """One thread per physical core on ``node`` (all nodes when ``None``), never CPU 0's core.

        A capture thread sharing a core with another busy hyperthread loses its L1/L2 and its issue slots
        at random, so only the first thread of each core is taken; its sibling stays idle or housekeeping.
        """
        nodes = self.nodes()
        cpus = sorted(c for n, cs in nodes.items() if node is None or n == node for c in cs)
        banned = set(self.thread_siblings(0)) | {0}
        cores, seen = [], set()
        for cpu in cpus:
            siblings = tuple(self.thread_siblings(cpu))
            if siblings in seen:
                continue
            seen.add(siblings)
            if cpu not in banned:
                cores.append(cpu)
        return cores

    def cpu_flags(self) -> set[str]:
        for line in self.fs.read_text("/proc/cpuinfo").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
        return set()

    # -- interfaces ----------------------------------------------------------------------------------------
    def interfaces(self) -> list[str]:
        return self.fs.listdir("/sys/class/net")

    def exists(self, iface: str) -> bool:
        return bool(iface) and "/" not in iface and self.fs.exists(f"/sys/class/net/{iface}")

    def device_dir(self, iface: str) -> str | None:
        """The interface's bus device in sysfs (``None`` for virtual interfaces such as veth)."""
        rel = f"/sys/class/net/{iface}/device"
        return self.fs.resolve(rel) if self.fs.exists(rel) else None

    def pci_dir(self, iface: str) -> str | None:
        """The device that owns the interrupts and the NUMA node: ``device`` itself, or for virtio_net the
        PCI function the virtio device hangs off (``.../0000:00:03.0/virtio2``)."""
        device = self.device_dir(iface)
        if device is None:
            return None
        subsystem = self.fs.read_link(f"{device}/subsystem") or ""
        if subsystem.rstrip("/").endswith("/virtio"):
            return device.rsplit("/", 1)[0]
        return device

    def nic_node(self, iface: str) -> int | None:
        """The NIC's NUMA node, ``None`` when the kernel does not know it (virtual device, -1, no NUMA)."""
        device = self.pci_dir(iface)
        if device is None or not self.fs.exists(f"{device}/numa_node"):
            return None
        node = int(self.fs.read(f"{device}/numa_node"))
        return node if node >= 0 else None

    def queues(self, iface: str, kind: str) -> list[int]:
        """Indexes of the ``rx`` or ``tx`` queues the interface has now (``queues/rx-N``)."""
        prefix = f"{kind}-"
        found = [n[len(prefix):] for n in self.fs.listdir(f"/sys/class/net/{iface}/queues")
                 if n.startswith(prefix)]
        return sorted(int(n) for n in found if n.isdigit())

    def default_route_interfaces(self) -> set[str]:
        """Interfaces that carry an IPv4 or IPv6 default route in this network namespace."""
        found = set()
        if self.fs.exists("/proc/net/route"):
            for line in self.fs.read_text("/proc/net/route").splitlines()[1:]:
                cols = line.split()
                if len(cols) >= 8 and cols[1] == "00000000" and cols[7] == "00000000":
                    found.add(cols[0])
        if self.fs.exists("/proc/net/ipv6_route"):
            for line in self.fs.read_text("/proc/net/ipv6_route").splitlines():
                cols = line.split()
                if len(cols) >= 10 and cols[0] == "0" * 32 and cols[1] == "00" and cols[9] != "lo":
                    found.add(cols[9])
        return found
