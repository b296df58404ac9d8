"""The accessors: how each kind of setting is read, written and compared.

``attr``     a sysfs or procfs attribute, through :class:`HostFS`, with a codec for its notation
``irq``      ``/proc/irq/N/smp_affinity_list``, found again by action name if the number changed
``ethtool``  one field of channels, rings, coalescing or pause, through :class:`NicControl`
``feature``  one ``ethtool -k`` feature flag
``service``  whether a daemon runs (irqbalance)
``file``     a whole configuration file under /etc (absent is a value: ``None``)
``link``     a symlink (enabling a systemd unit)
"""
from __future__ import annotations

import errno
import re
from typing import Any

from provisioning.errors import Unsupported
from provisioning.hostfs import HostFS
from provisioning.irqs import find_irq_by_name, interface_irqs, irq_names
from provisioning.settings import Accessor
from provisioning.topology import Topology, parse_cpulist, parse_cpumask

_SELECTED = re.compile(r"\[([^\]]+)\]")
_ETHTOOL_OPTION = {"channels": "-l", "rings": "-g", "coalesce": "-c", "pause": "-a"}
_UNSUPPORTED_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTSUP}


class Attr(Accessor):
    """A kernel attribute.  Codecs: ``int``, ``text``, ``select`` (``always [madvise] never``),
    ``cpulist`` (``4-7``) and ``cpumask`` (``00000000,000000f0``; written in the width it was read)."""

    kind = "attr"

    def __init__(self, fs: HostFS, path: str, codec: str = "int", missing: str = "", readonly: str = ""):
        self.fs, self.path, self.codec = fs, path, codec
        self.missing = missing or f"{fs.show(path)} does not exist on this host"
        self.readonly = readonly or f"{fs.show(path)} is read-only here"

    def locator(self):
        return {"kind": self.kind, "path": self.path, "codec": self.codec}

    def where(self):
        return self.fs.show(self.path)

    def read(self):
        if not self.fs.exists(self.path):
            raise Unsupported(self.missing)
        raw = self.fs.read(self.path).strip()
        if self.codec == "int":
            try:
                return int(raw)
            except ValueError:
                raise Unsupported(f"{self.where()} holds {raw!r}, not a single number") from None
        if self.codec == "select":
            match = _SELECTED.search(raw)
            return match.group(1) if match else raw
        return raw

    def write(self, value):
        try:
            self.fs.write(self.path, str(value))
        except OSError as err:
            if err.errno in _UNSUPPORTED_ERRNOS:
                raise Unsupported(f"{self.where()} refuses writes ({err.strerror})") from err
            raise

    def same(self, current, target, at_least=False):
        if self.codec == "cpulist":
            return parse_cpulist(str(current)) == parse_cpulist(str(target))
        if self.codec == "cpumask":
            return parse_cpumask(str(current)) == parse_cpumask(str(target))
        return super().same(current, target, at_least)

    def refuses_write(self):
        return None if self.fs.is_writable(self.path) else self.readonly


class IrqAffinity(Accessor):
    """An interrupt's CPU list.  The number is kept with the action name, and the name wins: drivers that
    re-request their vectors on a channel change can hand the same queue a different number."""

    kind = "irq"

    def __init__(self, fs: HostFS, irq: int, name: str):
        self.fs, self.irq, self.name = fs, irq, name

    def locator(self):
        return {"kind": self.kind, "irq": self.irq, "name": self.name}

    def _number(self) -> int:
        if irq_names(self.fs).get(self.irq) == self.name:
            return self.irq
        moved = find_irq_by_name(self.fs, self.name)
        if moved is None:
            raise Unsupported(f"interrupt {self.name} (was IRQ {self.irq}) no longer exists")
        return moved

    def where(self):
        return f"/proc/irq/{self.irq}/smp_affinity_list"

    def read(self):
        return self.fs.read(f"/proc/irq/{self._number()}/smp_affinity_list").strip()

    def write(self, value):
        try:
            self.fs.write(f"/proc/irq/{self._number()}/smp_affinity_list", str(value))
        except OSError as err:
            if err.errno == errno.EIO:  # irq_can_set_affinity_usr(): managed or per-CPU interrupt
                raise Unsupported(f"IRQ {self.irq} ({self.name}) has kernel-managed affinity") from err
            raise

    def same(self, current, target, at_least=False):
        return parse_cpulist(str(current)) == parse_cpulist(str(target))


class EthtoolField(Accessor):
    """One field of an ethtool group: ``channels``, ``rings``, ``coalesce`` or ``pause``."""

    kind = "ethtool"

    def __init__(self, nic, iface: str, group: str, field: str):
        self.nic, self.iface, self.group, self.field = nic, iface, group, field

    def locator(self):
        return {"kind": self.kind, "iface": self.iface, "group": self.group, "field": self.field}

    def where(self):
        return f"ethtool {_ETHTOOL_OPTION[self.group]} {self.iface}: {self.field}"

    def read(self):
        values = getattr(self.nic, self.group)(self.iface)
        if self.field not in values:
            raise Unsupported(f"the {self.iface} driver has no {self.group} field {self.field}")
        return values[self.field]

    def write(self, value):
        getattr(self.nic, f"set_{self.group}")(self.iface, **{self.field: value})


class ChannelCount(EthtoolField):
    """A channel count.  Shrinking it deletes queues: their RPS/XPS attributes and the affinity of their
    interrupts go with them, so those are this write's collateral, snapshotted before and put back after
    a revert re-creates the queues."""

    _QUEUE_ATTRS = {"rx": ("rps_cpus", "rps_flow_cnt"), "tx": ("xps_cpus", "xps_rxqs", "tx_maxrate")}

    def __init__(self, nic, fs: HostFS, iface: str, field: str):
        super().__init__(nic, iface, "channels", field)
        self.fs = fs

    def collateral(self):
        topo = Topology(self.fs)
        found: list[Accessor] = []
        for kind, names in self._QUEUE_ATTRS.items():
            for queue in topo.queues(self.iface, kind):
                for name in names:
                    path = f"/sys/class/net/{self.iface}/queues/{kind}-{queue}/{name}"
                    if self.fs.exists(path) and self.fs.is_writable(path):
                        found.append(Attr(self.fs, path, "cpumask" if "cpus" in name or "rxqs" in name
                                          else "int"))
        found += [IrqAffinity(self.fs, irq.number, irq.name) for irq in interface_irqs(self.fs, topo, self.iface)]
        return found


class Feature(Accessor):
    kind = "feature"

    def __init__(self, nic, iface: str, name: str):
        self.nic, self.iface, self.name = nic, iface, name

    def locator(self):
        return {"kind": self.kind, "iface": self.iface, "name": self.name}

    def where(self):
        return f"ethtool -k {self.iface}: {self.name}"

    def _flags(self) -> tuple[bool, bool]:
        features = self.nic.features(self.iface)
        if self.name not in features:
            raise Unsupported(f"the {self.iface} driver has no feature {self.name}")
        return features[self.name]

    def read(self):
        return self._flags()[0]

    def write(self, value):
        self.nic.set_feature(self.iface, self.name, bool(value))

    def refuses_write(self):
        return None if self._flags()[1] else f"{self.name} is fixed by the {self.iface} driver"


class ServiceState(Accessor):
    kind = "service"

    def __init__(self, services, name: str):
        self.services, self.name = services, name

    def locator(self):
        return {"kind": self.kind, "name": self.name}

    def where(self):
        return f"service {self.name}"

    def read(self):
        return self.services.status(self.name)

    def write(self, value):
        self.services.set_status(self.name, value)

    def same(self, current, target, at_least=False):
        return bool(current.get("active")) == bool(target.get("active"))

    def show(self, value):
        return "-" if value is None else ("running" if value.get("active") else "stopped")


class ConfigFile(Accessor):
    """A whole file under /etc; ``None`` means absent.  ``restart`` names a service to restart after a
    write when it is running (irqbalance reads /etc/default/irqbalance only at start).  Removing the file
    also removes the empty directories between it and ``anchor``, which tuning created for it."""

    kind = "file"

    def __init__(self, fs: HostFS, path: str, services=None, restart: str | None = None, mode: int = 0o644,
                 anchor: str | None = None):
        self.fs, self.path, self.services, self.restart, self.mode = fs, path, services, restart, mode
        self.anchor = anchor

    def locator(self):
        return {"kind": self.kind, "path": self.path, "restart": self.restart, "mode": self.mode,
                "anchor": self.anchor}

    def where(self):
        return self.fs.show(self.path)

    def read(self):
        return self.fs.read_file(self.path)

    def write(self, value):
        self.fs.put_file(self.path, value, self.mode, prune_below=self.anchor)
        if self.restart and self.services is not None:
            self.services.restart_if_active(self.restart)

    def show(self, value):
        if value is None:
            return "absent"
        lines = value.count("\n") + (0 if value.endswith("\n") else 1)
        return f"{lines} line{'s' if lines != 1 else ''}"


class Link(Accessor):
    """A symlink; ``None`` means absent.  ``anchor`` as for :class:`ConfigFile`."""

    kind = "link"

    def __init__(self, fs: HostFS, path: str, anchor: str | None = None):
        self.fs, self.path, self.anchor = fs, path, anchor

    def locator(self):
        return {"kind": self.kind, "path": self.path, "anchor": self.anchor}

    def where(self):
        return self.fs.show(self.path)

    def read(self):
        return self.fs.read_link(self.path)

    def write(self, value):
        self.fs.put_link(self.path, value, prune_below=self.anchor)

    def show(self, value):
        return "absent" if value is None else f"-> {value}"


def rebuild(host, locator: dict[str, Any]) -> Accessor:
    """The accessor a state-file locator describes, bound to ``host``."""
    kind = locator["kind"]
    if kind == "attr":
        return Attr(host.fs, locator["path"], locator["codec"])
    if kind == "irq":
        return IrqAffinity(host.fs, locator["irq"], locator["name"])
    if kind == "ethtool":
        if locator["group"] == "channels":
            return ChannelCount(host.nic, host.fs, locator["iface"], locator["field"])
        return EthtoolField(host.nic, locator["iface"], locator["group"], locator["field"])
    if kind == "feature":
        return Feature(host.nic, locator["iface"], locator["name"])
    if kind == "service":
        return ServiceState(host.services, locator["name"])
    if kind == "file":
        return ConfigFile(host.fs, locator["path"], host.services, locator.get("restart"),
                          locator.get("mode", 0o644), locator.get("anchor"))
    if kind == "link":
        return Link(host.fs, locator["path"], locator.get("anchor"))
    raise ValueError(f"unknown setting kind {kind!r} in the state file")
