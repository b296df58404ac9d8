"""In-memory :class:`provisioning.nic.NicControl` for the fake tree, with the driver behaviour that matters.

A channel change adds and removes queue directories in the fake sysfs as the kernel does
(``netif_set_real_num_rx_queues``), which is what makes a shrink destroy RPS/XPS values.  A group that is
``None`` is not supported by the driver (EOPNOTSUPP -> :class:`Unsupported`).  ``fail[(method, iface)]``
raises once.
"""
from __future__ import annotations

import copy
import errno
import shutil

from provisioning.errors import Unsupported

from fakesys.tree import queue_files


def i40e_port() -> dict:
    return {
        "channels": {"max_rx": 0, "max_tx": 0, "max_other": 1, "max_combined": 8,
                     "rx_count": 0, "tx_count": 0, "other_count": 1, "combined_count": 8},
        "rings": {"rx_max": 4096, "tx_max": 4096, "rx": 512, "tx": 512},
        "coalesce": {"use_adaptive_rx_coalesce": 1, "use_adaptive_tx_coalesce": 1,
                     "rx_coalesce_usecs": 50, "tx_coalesce_usecs": 50, "rx_max_coalesced_frames": 0},
        "features": {"rx-gro": (True, True), "rx-lro": (False, False), "rx-gro-hw": (False, False),
                     "rx-checksum": (True, True)},
        "pause": {"autoneg": True, "rx": True, "tx": True},
    }


def veth_port() -> dict:
    return {
        "channels": {"max_rx": 4, "max_tx": 4, "max_other": 0, "max_combined": 0,
                     "rx_count": 4, "tx_count": 4, "other_count": 0, "combined_count": 0},
        "rings": None, "coalesce": None, "pause": None,
        "features": {"rx-gro": (False, True), "rx-lro": (False, False), "rx-gro-hw": (False, False)},
    }


class FakeNic:
    def __init__(self, fs, ports: dict[str, dict] | None = None):
        self.fs = fs
        self.ports = ports if ports is not None else {
            "ens1f0": i40e_port(), "ens1f1": i40e_port(), "veth0": veth_port()}
        self.fail: dict[tuple[str, str], Exception] = {}
        self.calls: list[tuple[str, str, dict]] = []

    def state(self) -> dict:
        return copy.deepcopy(self.ports)

    def _group(self, iface: str, group: str, method: str) -> dict:
        if (method, iface) in self.fail:
            raise self.fail.pop((method, iface))
        if iface not in self.ports:
            raise LookupError(f"interface {iface} no longer exists")
        values = self.ports[iface][group]
        if values is None:
            raise Unsupported(f"the {iface} driver does not support {group}")
        return values

    def _get(self, iface, group):
        return dict(self._group(iface, group, group))

    def _set(self, iface, group, params):
        values = self._group(iface, group, f"set_{group}")
        self.calls.append((f"set_{group}", iface, dict(params)))
        for key, value in params.items():
            if key not in values:
                raise OSError(errno.EOPNOTSUPP, f"{group} {key}")
            values[key] = value

    def channels(self, iface):
        return self._get(iface, "channels")

    def set_channels(self, iface, **counts):
        ch = self._group(iface, "channels", "set_channels")
        for key, value in counts.items():
            limit = ch["max_" + key.replace("_count", "")]
            if not 0 < value <= limit:
                raise OSError(errno.EINVAL, f"{key} {value} outside 1..{limit}")
        self._set(iface, "channels", counts)
        rx = ch["combined_count"] + ch["rx_count"]
        tx = ch["combined_count"] + ch["tx_count"]
        self._sync_queues(iface, "rx", rx)
        self._sync_queues(iface, "tx", tx)

    def _sync_queues(self, iface: str, kind: str, count: int) -> None:
        base = f"/sys/class/net/{iface}/queues"
        have = self.fs.listdir(base)
        for name in have:
            if name.startswith(kind + "-") and int(name.split("-")[1]) >= count:
                shutil.rmtree(self.fs.path(f"{base}/{name}"))
        netdir = self.fs.resolve(f"/sys/class/net/{iface}").lstrip("/")
        for q in range(count):
            if f"{kind}-{q}" not in have:
                queue_files(self.fs.root, netdir, kind, q)

    def rings(self, iface):
        return self._get(iface, "rings")

    def set_rings(self, iface, **sizes):
        rings = self._group(iface, "rings", "set_rings")
        for key, value in sizes.items():
            if value > rings[f"{key}_max"]:
                raise OSError(errno.EINVAL, f"ring {key} {value} above {rings[key + '_max']}")
        self._set(iface, "rings", sizes)

    def coalesce(self, iface):
        return self._get(iface, "coalesce")

    def set_coalesce(self, iface, **params):
        self._set(iface, "coalesce", params)

    def features(self, iface):
        return self._get(iface, "features")

    def set_feature(self, iface, name, enabled):
        features = self._group(iface, "features", "set_feature")
        self.calls.append(("set_feature", iface, {name: enabled}))
        if not features[name][1]:
            raise Unsupported(f"{name} is fixed by the {iface} driver")
        features[name] = (enabled, True)

    def pause(self, iface):
        return self._get(iface, "pause")

    def set_pause(self, iface, **params):
        self._set(iface, "pause", params)


class FakeServices:
    """irqbalance as a process (no systemd); counts restarts and daemon reloads."""

    def __init__(self, fs, running: bool = True):
        self.fs = fs
        self.units = {"irqbalance": {"active": running, "manager": "process",
                                     "cmdline": ["/usr/sbin/irqbalance", "--foreground"]} if running
                      else {"active": False, "manager": "process"}}
        self.restarts: list[str] = []
        self.reloads = 0
        self.fail: dict[str, Exception] = {}

    def state(self) -> dict:
        return copy.deepcopy(self.units)

    def status(self, name):
        return copy.deepcopy(self.units.get(name, {"active": False, "manager": "process"}))

    def set_status(self, name, wanted):
        if name in self.fail:
            raise self.fail.pop(name)
        if self.fs.dry_run:
            return
        self.units[name] = copy.deepcopy(wanted)

    def restart_if_active(self, name):
        if self.units.get(name, {}).get("active") and not self.fs.dry_run:
            self.restarts.append(name)

    def daemon_reload(self):
        if self.fs.dry_run:
            return False
        self.reloads += 1
        return True
