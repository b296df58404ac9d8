"""The host being tuned: its files (sysfs, procfs, /etc), its NICs' ethtool settings and its services.

Tests build a :class:`Host` from a fake tree, an in-memory NIC and fake services; the CLI uses
:meth:`Host.live`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from provisioning.hostfs import HostFS
from provisioning.nic import KernelNic, NicControl, RecordingNic
from provisioning.services import HostServices, ServiceControl
from provisioning.topology import Topology


@dataclass
class Host:
    fs: HostFS
    nic: NicControl
    services: ServiceControl
    topo: Topology = field(init=False)

    def __post_init__(self):
        self.topo = Topology(self.fs)

    @property
    def dry_run(self) -> bool:
        return self.fs.dry_run

    @classmethod
    def live(cls, root: str = "/", dry_run: bool = False) -> "Host":
        fs = HostFS(root, dry_run=dry_run)
        nic: NicControl = KernelNic()
        return cls(fs, RecordingNic(nic) if dry_run else nic, HostServices(fs))

    def close(self) -> None:
        close = getattr(self.nic, "close", None) or getattr(getattr(self.nic, "inner", None), "close", None)
        if close is not None:
            close()
