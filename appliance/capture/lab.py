"""The lab: a network namespace holding one multi-queue veth pair, a stand-in NIC for capture tests.

``lab0`` is the capture side and ``lab1`` the sender side; both live inside the namespace, so nothing the
lab does can reach the host's interfaces.  Every frame sent out of ``lab1`` arrives on ``lab0``, on the rx
queue numbered like the tx queue it left by (see shared notes: veth as a stand-in NIC).

Built with iproute2's ``ip`` rather than pyroute2 in-process: ``ip -n NS`` touches only the namespace, never
moves this process into it, and its errors are the operator's familiar ones.  Namespace-local settings made
before the pair exists, so the links inherit them from ``default``:

* IPv6 off (no link-local address, so no neighbour discovery or MLD frames mixed into a capture);
* IPv4 ``rp_filter`` 0: the feed's sources (e.g. 10.1.1.1) have no route back through ``lab0``, and a
  socket that joins the groups would otherwise never see the datagrams.

Each side has a private IPv4 address (10.250.0.1/30 and .2/30) so a multicast join has an interface address.

``with Lab(name) as lab:`` brings the lab up and deletes the namespace (and so the pair) on the way out,
whatever happens inside -- including a lab of that name that existed before.  ``lab.claim()`` is for a run
that needs the lab to itself (validate): it creates the namespace or refuses one that exists, so two runs
never share a lab and a run never deletes a lab it did not make.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from appliance.errors import NeedsPrivilege, RunFailed, UserError

DEFAULT_NAME = "appliance-lab"
DEFAULT_QUEUES = 4
MAX_QUEUES = 64
CAPTURE_IF = "lab0"
SENDER_IF = "lab1"
MTU = 1500
ADDRESSES = {CAPTURE_IF: "10.250.0.1/30", SENDER_IF: "10.250.0.2/30"}
NETNS_RUN_DIR = Path("/run/netns")          # where ``ip netns add`` keeps its namespaces
# /proc/sys paths written inside the namespace only; an absent one (IPv6 not built in) is skipped.
NS_SYSCTLS = {
    "net/ipv6/conf/all/disable_ipv6": "1",
    "net/ipv6/conf/default/disable_ipv6": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "0",
}
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
_SET_SYSCTLS = ('for kv in "$@"; do p="/proc/sys/${kv%%=*}"; '
                'if [ -e "$p" ]; then echo "${kv#*=}" > "$p"; fi; done')


class LabError(RunFailed):
    """The lab could not be made, or one of that name exists with another shape."""


class LabBusy(UserError):
    """A lab a run wanted for itself alone exists already."""


NeedsRoot = NeedsPrivilege


class Lab:
    """A namespace ``name`` with the veth pair lab0 <-> lab1, ``queues`` rx and tx queues on each side."""

    def __init__(self, name: str = DEFAULT_NAME, queues: int = DEFAULT_QUEUES):
        if not _NAME_RE.fullmatch(name):
            raise UserError(f"lab name {name!r} must be 1-63 letters, digits, '.', '_' or '-' "
                            "(not starting with '.' or '-')")
        if not 1 <= queues <= MAX_QUEUES:
            raise UserError(f"--queues must be 1-{MAX_QUEUES}, not {queues}")
        self.name = name
        self.queues = queues

    # -- public surface -------------------------------------------------------------------------------
    def netns_cmd(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the lab's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def exists(self) -> bool:
        return (NETNS_RUN_DIR / self.name).exists()

    def up(self, check_queues: bool = True) -> bool:
        """Create the lab; True if made now, False if it already existed with this shape (then links that are
        down, an MTU or an address that drifted are put back).  ``check_queues=False`` accepts any queue count
        on an existing lab and adopts it."""
        _preflight()
        if self.exists():
            self._verify(check_queues)
            return False
        made = _ip("netns", "add", self.name, tolerate="File exists")
        if made is None:                       # created by someone else meanwhile
            self._verify(check_queues)
            return False
        self._build_or_delete()
        return True

    def claim(self) -> None:
        """Create the lab for this process alone, or refuse: a lab that exists belongs to someone else (another
        run, or an operator's) and is never used or deleted.  ``ip netns add`` creates the namespace file with
        O_EXCL, so of two runs racing for one name exactly one wins."""
        _preflight()
        busy = (f"a network namespace named {self.name} already exists (another run, or one left behind): "
                f"choose another --lab, or remove it with 'appliance lab down --name {self.name}'")
        if self.exists() or _ip("netns", "add", self.name, tolerate="File exists") is None:
            raise LabBusy(busy)
        self._build_or_delete()

    def _build_or_delete(self) -> None:
        try:
            self._build()
        except BaseException:
            _ip("netns", "del", self.name, tolerate="No such file")
            raise

    def down(self) -> bool:
        """Delete the namespace (and with it the pair); True if it existed."""
        _preflight()
        if not self.exists():
            return False
        return _ip("netns", "del", self.name, tolerate="No such file") is not None

    def links(self) -> dict[str, dict]:
        """``ip -details`` JSON of lab0 and lab1 as found in the namespace (absent ones left out)."""
        out = _ip("-n", self.name, "-d", "-j", "link", "show")
        found = {}
        for link in json.loads(out or "[]"):
            if link.get("ifname") in (CAPTURE_IF, SENDER_IF):
                found[link["ifname"]] = link
        return found

    def describe(self) -> str:
        return (f"network namespace {self.name}: veth {CAPTURE_IF} (capture, {ADDRESSES[CAPTURE_IF]}) <-> "
                f"{SENDER_IF} (sender, {ADDRESSES[SENDER_IF]}), {self.queues} rx and {self.queues} tx queues "
                f"each, MTU {MTU}, IPv6 off")

    def __enter__(self) -> "Lab":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    # -- building and checking ------------------------------------------------------------------------
    def _build(self) -> None:
        _run(self.netns_cmd(["sh", "-ec", _SET_SYSCTLS, "sh", *(f"{k}={v}" for k, v in NS_SYSCTLS.items())]))
        q = str(self.queues)
        _ip("-n", self.name, "link", "add", CAPTURE_IF, "numrxqueues", q, "numtxqueues", q, "type", "veth",
            "peer", "name", SENDER_IF, "numrxqueues", q, "numtxqueues", q)
        _ip("-n", self.name, "link", "set", "lo", "up")
        for dev in (CAPTURE_IF, SENDER_IF):
            self._settle(dev, {})

    def _settle(self, dev: str, link: dict) -> None:
        """Bring ``dev`` to MTU 1500, up, with its address; only what differs is changed."""
        if link.get("mtu") != MTU:
            _ip("-n", self.name, "link", "set", dev, "mtu", str(MTU))
        if "UP" not in link.get("flags", ()):
            _ip("-n", self.name, "link", "set", dev, "up")
        have = json.loads(_ip("-n", self.name, "-j", "addr", "show", "dev", dev) or "[]")
        local = {f"{a['local']}/{a['prefixlen']}" for i in have for a in i.get("addr_info", ())
                 if a.get("family") == "inet"}
        if ADDRESSES[dev] not in local:
            _ip("-n", self.name, "addr", "add", ADDRESSES[dev], "dev", dev, tolerate="File exists")

    def _verify(self, check_queues: bool) -> None:
        links = self.links()
        redo = f"; remove it with 'appliance lab down --name {self.name}' and run 'up' again"
        for dev in (CAPTURE_IF, SENDER_IF):
            link = links.get(dev)
            if link is None:
                raise LabError(f"network namespace {self.name} exists but has no {dev}{redo}")
            kind = link.get("linkinfo", {}).get("info_kind")
            if kind != "veth":
                raise LabError(f"{dev} in {self.name} is a {kind or 'plain'} link, not veth{redo}")
            queues = (link.get("num_rx_queues"), link.get("num_tx_queues"))
            if check_queues and queues != (self.queues, self.queues):
                raise LabError(f"lab {self.name} exists with {queues[0]} rx / {queues[1]} tx queues on {dev}, "
                               f"not {self.queues}{redo}")
            self.queues = queues[0]
            self._settle(dev, link)


def _preflight() -> None:
    if os.geteuid() != 0:
        raise NeedsRoot("the lab needs root to create network namespaces and veth pairs (run it with sudo)")
    if shutil.which("ip") is None:
        raise LabError("iproute2's 'ip' command is not installed (apt-get install iproute2)")


def _ip(*args: str, tolerate: str | None = None) -> str | None:
    """Run ``ip ARGS``; its stdout, or None when it failed with the ``tolerate`` message."""
    return _run(["ip", *args], tolerate)


def _run(argv: list[str], tolerate: str | None = None) -> str | None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode == 0:
        return done.stdout
    message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
    if tolerate and tolerate in done.stderr:
        return None
    raise LabError(f"'{' '.join(argv)}' failed: {message}")
