"""Fake sysfs/procfs/etc trees, a fake NIC and fake services for the ``appliance tune`` unit tests."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioning.host import Host

from fakesys.kernel import FakeKernelFS
from fakesys.nic import FakeNic, FakeServices
from fakesys.tree import build, snapshot


@dataclass
class FakeMachine:
    root: Path
    fs: FakeKernelFS
    nic: FakeNic
    services: FakeServices
    host: Host

    def snapshot(self) -> tuple:
        """Everything tuning can change: the tree byte for byte, the NIC and the services."""
        return snapshot(self.root), self.nic.state(), self.services.state()

    def host_view(self, dry_run: bool = False) -> Host:
        """Another Host over the same machine (a later process: verify, revert), optionally dry-run."""
        fs = FakeKernelFS(self.root, dry_run=dry_run)
        fs.fail, fs.hugepage_limit, fs.managed_irqs = self.fs.fail, self.fs.hugepage_limit, self.fs.managed_irqs
        self.nic.fs = fs
        self.services.fs = fs
        return Host(fs, self.nic, self.services)


def machine(tmp_path: Path, pdpe1gb: bool = True, irqbalance: bool = True) -> FakeMachine:
    root = build(tmp_path / "root", pdpe1gb=pdpe1gb)
    fs = FakeKernelFS(root)
    nic = FakeNic(fs)
    services = FakeServices(fs, running=irqbalance)
    return FakeMachine(root, fs, nic, services, Host(fs, nic, services))
