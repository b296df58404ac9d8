"""Host provisioning for the capture appliance: what ``appliance tune`` plans, applies, verifies, reverts.

Layers, each its own module:

- :mod:`~provisioning.hostfs`  every sysfs/procfs/etc read and write, under one overridable root, dry-run
- :mod:`~provisioning.topology`, :mod:`~provisioning.irqs`  CPUs, NUMA nodes, queues, a NIC's vectors
- :mod:`~provisioning.nic`  ethtool settings behind one small interface (pyroute2, the ethtool command)
- :mod:`~provisioning.services`  irqbalance under systemd or as a bare process (psutil)
- :mod:`~provisioning.profile`  TOML profiles (built-ins in ``profiles/``), ``extends``, validation
- :mod:`~provisioning.knobs`  one builder per knob, in apply order, producing :class:`Setting` rows
- :mod:`~provisioning.engine`  plan, apply (write-ahead state, rollback), verify, revert

``provisioning/setup.sh`` (the checkout's bootstrap script) lives beside the package and is not part of it.
"""
from provisioning.context import Context, Target, resolve
from provisioning.engine import apply, plan, revert, verify
from provisioning.errors import (ApplyError, ProfileError, ProvisioningError, StateError, TargetError,
                                 Unsupported)
from provisioning.host import Host
from provisioning.hostfs import HostFS
from provisioning.profile import BUILTIN, Profile, load
from provisioning.state import DEFAULT_STATE

__all__ = [
    "ApplyError", "BUILTIN", "Context", "DEFAULT_STATE", "Host", "HostFS", "Profile", "ProfileError",
    "ProvisioningError", "StateError", "Target", "TargetError", "Unsupported",
    "apply", "load", "plan", "resolve", "revert", "verify",
]
