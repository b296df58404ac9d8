"""The real back ends where a test can reach them safely: the ethtool-command fallback (pause parameters)
against a stand-in ``ethtool`` script, and irqbalance handling without systemd against a stand-in daemon."""
from __future__ import annotations

import shutil
import subprocess
import time

import psutil
import pytest

from provisioning.errors import Unsupported
from provisioning.hostfs import HostFS
from provisioning.nic import KernelNic
from provisioning.services import HostServices

# Prints what ethtool 6.1 prints for -a; logs -A; answers like the kernel for veth (no pause support) and
# for a driver that rejects the values.
FAKE_ETHTOOL = r"""#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.log"
case "$1 $2" in
  "-a veth0"|"-A veth0") echo "netlink error: Operation not supported" >&2; exit 76 ;;
  "-A bad0") echo "netlink error: Invalid argument" >&2; exit 1 ;;
  "-a "*) printf 'Pause parameters for %s:\nAutonegotiate:\ton\nRX:\t\toff\nTX:\t\ton\nRX negotiated: on\nTX negotiated: on\n' "$2" ;;
  "-A "*) exit 0 ;;
esac
"""


@pytest.fixture
def ethtool(tmp_path):
    script = tmp_path / "ethtool"
    script.write_text(FAKE_ETHTOOL)
    script.chmod(0o755)
    return script


def test_pause_is_read_from_ethtool_a(ethtool):
    assert KernelNic(str(ethtool)).pause("ens1f0") == {"autoneg": True, "rx": False, "tx": True}


def test_pause_is_written_with_ethtool_A(ethtool):
    KernelNic(str(ethtool)).set_pause("ens1f0", autoneg=False, rx=False)
    assert (ethtool.parent / "calls.log").read_text().splitlines() == ["-A ens1f0 autoneg off rx off"]


def test_pause_unsupported_and_rejected(ethtool):
    nic = KernelNic(str(ethtool))
    with pytest.raises(Unsupported, match="veth0 driver does not support pause"):
        nic.pause("veth0")
    with pytest.raises(OSError, match="Invalid argument"):
        nic.set_pause("bad0", rx=False)


def _stand_ins(binary) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["exe", "status"])
            if p.info["exe"] == str(binary) and p.info["status"] != psutil.STATUS_ZOMBIE]


def test_irqbalance_without_systemd_is_stopped_and_restarted_as_it_ran(tmp_path):
    if any(p.info["name"] == "irqbalance" and p.info["status"] != psutil.STATUS_ZOMBIE
           for p in psutil.process_iter(["name", "status"])):
        pytest.skip("an irqbalance runs on this host; this test would stop it")
    binary = tmp_path / "irqbalance"
    shutil.copy("/bin/sleep", binary)
    daemon = subprocess.Popen([str(binary), "300"])
    services = HostServices(HostFS(tmp_path / "no-systemd-root"), stop_timeout=5)
    try:
        for _ in range(100):  # until the exec has happened and the name is irqbalance
            if services.status("irqbalance")["active"]:
                break
            time.sleep(0.01)
        was = services.status("irqbalance")
        assert was == {"active": True, "manager": "process", "cmdline": [str(binary), "300"]}

        services.set_status("irqbalance", {"active": False})
        assert daemon.wait(timeout=5) is not None
        assert services.status("irqbalance") == {"active": False, "manager": "process"}

        services.set_status("irqbalance", was)
        for _ in range(100):
            if services.status("irqbalance")["active"]:
                break
            time.sleep(0.01)
        assert services.status("irqbalance") == was
        assert [p.pid for p in _stand_ins(binary)] != [daemon.pid]
    finally:
        left = _stand_ins(binary)
        for proc in left:
            proc.kill()
        psutil.wait_procs(left, timeout=5)  # they are our children: reap them
        daemon.kill()
        daemon.wait()
