"""Which interrupts belong to an interface, and which queue each one serves.

The candidates are only the MSI/MSI-X vectors of the interface's own PCI function
(``/sys/class/net/IF/device/msi_irqs``), so another port's or another device's interrupts can never be
picked up by a name that happens to match.  Among those, the queue vectors are told from the admin ones
(``misc``, ``async``, ``config``, link-state) by the name the driver gave the action in /proc/interrupts:

    ixgbe, bnxt, sfc     ens1f0-TxRx-3, ens1f0-rx-3, ens1f0-3
    i40e, ice            i40e-ens1f0-TxRx-3        (admin: i40e-0000:81:00.0:misc)
    mlx5                 mlx5_comp3@pci:0000:81:00.0 (admin: mlx5_async0@pci:...)
    virtio_net           virtio2-input.3, virtio2-output.3 (admin: virtio2-config)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from provisioning.hostfs import HostFS
from provisioning.topology import Topology

_SPLIT = re.compile(r"[-_.:\s]+")
_ADMIN_WORDS = {"config", "misc", "async", "ctrl", "admin", "mgmt", "ptp", "other", "event", "fdir", "lsc",
                "aq", "reporting", "stats", "err", "link", "mbx", "fw", "cmd", "pages"}
_QUEUE_WORD = re.compile(r"^(?:txrx|rxtx|rx|tx|input|output|comp|fp|queue|q|ch)?(\d+)$", re.I)


@dataclass(frozen=True)
class Irq:
    number: int
    name: str
    queue: int | None  # None: an admin vector of the device, never touched


def irq_names(fs: HostFS) -> dict[int, str]:
    """IRQ number -> action name, for every numbered line of /proc/interrupts.

    ``/sys/kernel/irq/N/actions`` holds the exact name when the kernel has it (4.17+); otherwise the name
    is the last column of /proc/interrupts (names of NIC vectors contain no spaces).
    """
    names = {}
    for line in fs.read_text("/proc/interrupts").splitlines()[1:]:
        head, colon, rest = line.partition(":")
        if not colon or not head.strip().isdigit():
            continue
        number = int(head)
        actions = f"/sys/kernel/irq/{number}/actions"
        if fs.exists(actions):
            names[number] = fs.read(actions).strip()
        else:
            cols = rest.split()
            names[number] = cols[-1] if cols else ""
    return names


def queue_of(name: str, iface: str) -> int | None:
    """The queue index a vector serves, from its action name; ``None`` for admin vectors."""
    base = name.split("@", 1)[0]
    if iface:
        base = base.replace(iface, " ")
    words = [w for w in _SPLIT.split(base) if w]
    if not words or any(w.rstrip("0123456789").lower() in _ADMIN_WORDS for w in words):
        return None
    match = _QUEUE_WORD.match(words[-1])
    if match is None:
        return None
    # A bare number only counts when something queue-like precedes it (``ens1f0-3``, ``virtio2-input.3``),
    # never when it is the whole name left after removing the interface name's digits.
    if words[-1].isdigit() and len(words) == 1 and not base.strip().startswith(("-", "_", ".")):
        return None
    return int(match.group(1))


def device_vectors(fs: HostFS, topo: Topology, iface: str) -> list[int]:
    """MSI/MSI-X vectors of the interface's own device; empty for virtual interfaces."""
    device = topo.pci_dir(iface)
    if device is None:
        return []
    return sorted(int(v) for v in fs.listdir(f"{device}/msi_irqs") if v.isdigit())


def interface_irqs(fs: HostFS, topo: Topology, iface: str) -> list[Irq]:
    """The interface's interrupts, each with the queue it serves (``None`` for admin vectors)."""
    vectors = set(device_vectors(fs, topo, iface))
    if not vectors:
        return []
    names = irq_names(fs)
    return [Irq(n, names[n], queue_of(names[n], iface)) for n in sorted(vectors) if n in names]


def find_irq_by_name(fs: HostFS, name: str) -> int | None:
    """The IRQ number that now carries ``name`` (numbers can change when a driver re-requests vectors)."""
    for number, action in irq_names(fs).items():
        if action == name:
            return number
    return None
