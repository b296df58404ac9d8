"""Ethtool-level NIC settings behind one small interface: channels, rings, coalescing, features, pause.

:class:`NicControl` is what the knobs use.  :class:`KernelNic` is the real one: pyroute2's ``Ethtool`` for
channels, rings, coalescing and features (ETHTOOL_[GS]CHANNELS, ETHTOOL_MSG_RINGS_[GS]ET with its ioctl
fallback, ETHTOOL_[GS]COALESCE, ETHTOOL_[GS]FEATURES), and the ``ethtool`` command for pause parameters,
because pyroute2 0.9.7 has neither ETHTOOL_GPAUSEPARAM nor ETHTOOL_MSG_PAUSE_GET.  Both act on the network
namespace of the calling process.  The unit tests use an in-memory fake of the same interface.

Values are plain dicts with the ethtool field names (``combined_count``, ``rx_max``,
``use_adaptive_rx_coalesce``, ``rx_coalesce_usecs``), features are named as in ``ethtool -k``'s kernel
strings (``rx-gro``, ``rx-lro``, ``rx-gro-hw``).
"""
from __future__ import annotations

import errno
import re
import shutil
import subprocess
from typing import Protocol

from provisioning.errors import Unsupported


class NicControl(Protocol):
    def channels(self, iface: str) -> dict[str, int]: ...
    def set_channels(self, iface: str, **counts: int) -> None: ...
    def rings(self, iface: str) -> dict[str, int]: ...
    def set_rings(self, iface: str, **sizes: int) -> None: ...
    def coalesce(self, iface: str) -> dict[str, int]: ...
    def set_coalesce(self, iface: str, **params: int) -> None: ...
    def features(self, iface: str) -> dict[str, tuple[bool, bool]]: ...  # name -> (enabled, changeable)
    def set_feature(self, iface: str, name: str, enabled: bool) -> None: ...
    def pause(self, iface: str) -> dict[str, bool]: ...  # autoneg, rx, tx
    def set_pause(self, iface: str, **params: bool) -> None: ...


CHANNEL_FIELDS = ("max_rx", "max_tx", "max_other", "max_combined",
                  "rx_count", "tx_count", "other_count", "combined_count")
PAUSE_FIELDS = ("autoneg", "rx", "tx")


def _unsupported_from(err: Exception, what: str, iface: str) -> Exception:
    """Translate pyroute2's and the kernel's errors at this boundary."""
    from pyroute2.ethtool.ioctl import NoSuchDevice, NotSupportedError

    if isinstance(err, NotSupportedError) or (isinstance(err, OSError) and err.errno == errno.EOPNOTSUPP):
        return Unsupported(f"the {iface} driver does not support {what}")
    if isinstance(err, NoSuchDevice):
        return LookupError(f"interface {iface} no longer exists")
    return err


class KernelNic:
    """The real NIC control.  One pyroute2 ``Ethtool`` (an ioctl socket and a genetlink socket) per run."""

    def __init__(self, ethtool_cmd: str | None = None):
        self._ethtool = None
        self._ethtool_cmd = ethtool_cmd

    def _eth(self):
        if self._ethtool is None:
            from pyroute2.ethtool import Ethtool

            self._ethtool = Ethtool()
        return self._ethtool

    def close(self) -> None:
        if self._ethtool is not None:
            self._ethtool.close()
            self._ethtool = None

    def _call(self, what: str, iface: str, fn, *args):
        try:
            return fn(*args)
        except Exception as err:  # translated below; anything unknown is re-raised unchanged
            translated = _unsupported_from(err, what, iface)
            if translated is err:
                raise
            raise translated from err

    def channels(self, iface):
        got = self._call("channel settings", iface, self._eth().get_channels, iface)
        return {f: int(getattr(got, f)) for f in CHANNEL_FIELDS}

    def set_channels(self, iface, **counts):
        self._call("channel settings", iface, self._eth().set_channels, iface, counts)

    def rings(self, iface):
        got = self._call("ring sizes", iface, self._eth().get_rings, iface)
        return {k: int(v) for k, v in got._asdict().items() if k in ("rx", "tx", "rx_max", "tx_max")
                and v is not None}

    def set_rings(self, iface, **sizes):
        self._call("ring sizes", iface, lambda: self._eth().set_rings(iface, **sizes))

    def coalesce(self, iface):
        got = self._call("interrupt coalescing", iface, self._eth().get_coalesce, iface)
        return {k: int(v) for k, v in got.items() if k != "cmd"}

    def set_coalesce(self, iface, **params):
        self._call("interrupt coalescing", iface, self._eth().set_coalesce, iface, params)

    def features(self, iface):
        got = self._call("feature flags", iface, self._eth().get_features, iface)
        return {name: (bool(f.enable), bool(f.available)) for name, f in got.features.items()}

    def set_feature(self, iface, name, enabled):
        def change():
            features = self._eth().get_features(iface)
            if name not in features.features:
                raise Unsupported(f"the {iface} driver has no feature {name}")
            features.features[name].enable = enabled
            # SFEATURES answers with ETHTOOL_F_WISH when the driver kept another value; pyroute2 turns any
            # non-zero answer into NotSupportedError, which is what it means here.
            self._eth().set_features(iface, features)

        self._call(f"changing {name}", iface, change)

    # -- pause: the ethtool command (pyroute2 0.9.7 has no pause parameters) --------------------------------
    def _run_ethtool(self, iface: str, *args: str) -> str:
        cmd = self._ethtool_cmd or shutil.which("ethtool")
        if cmd is None:
            raise Unsupported("pause parameters need the ethtool command, which is not installed")
        done = subprocess.run([cmd, *args], capture_output=True, text=True)
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()
            if "not supported" in message.lower():
                raise Unsupported(f"the {iface} driver does not support pause parameters")
            raise OSError(errno.EINVAL, f"ethtool {' '.join(args)}: {message}")
        return done.stdout

    def pause(self, iface):
        out = self._run_ethtool(iface, "-a", iface)
        found = {}
        for key, field in (("Autonegotiate", "autoneg"), ("RX", "rx"), ("TX", "tx")):
            match = re.search(rf"^{key}:\s*(on|off)\s*$", out, re.M)
            if match is None:
                raise Unsupported(f"the {iface} driver reports no {field} pause parameter")
            found[field] = match.group(1) == "on"
        return found

    def set_pause(self, iface, **params):
        args = [a for field, on in params.items() for a in (field, "on" if on else "off")]
        self._run_ethtool(iface, "-A", iface, *args)


class RecordingNic:
    """Dry run: reads go to the wrapped NIC control, changes are recorded in ``calls`` and not made."""

    def __init__(self, inner: NicControl):
        self.inner = inner
        self.calls: list[tuple[str, str, dict]] = []

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not name.startswith("set_"):
            return attr

        def record(iface, *args, **kwargs):
            if args:  # set_feature(iface, name, enabled)
                kwargs = {args[0]: args[1]}
            self.calls.append((name, iface, kwargs))

        return record
