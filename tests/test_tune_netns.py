"""A real apply / verify / revert on a veth inside a network namespace this test creates and deletes.

What veth offers is exercised for real: rx channels (``ethtool -L rx``), RPS/XPS masks, the per-interface
NAPI attributes and the GRO feature, all in the namespace's own sysfs (``ip netns exec`` mounts it).  The
profile switches off every host-wide knob (irqbalance, hugepages, governor, THP); the net.core sysctls stay
on because inside a namespace they are absent or read-only, which the plan must report as unsupported.
The host's own values (eth0, its IRQs, global sysctls, hugepages, THP) are compared before and after.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[1]
HOST_NIC = "eth0"
PROFILE = """extends = "latency"
name = "veth-test"
[knobs.irqbalance]
enabled = false
reason = "host-wide: a test never touches it"
[knobs.hugepages]
enabled = false
reason = "host-wide: a test never touches it"
[knobs.governor]
enabled = false
reason = "host-wide: a test never touches it"
[knobs.thp]
enabled = false
reason = "host-wide: a test never touches it"
"""
# Everything tuning may change on va, read inside the namespace.
NS_SNAPSHOT = r"""
import glob, json, subprocess
out = {}
for path in sorted(glob.glob("/sys/class/net/va/queues/*/*") + ["/sys/class/net/va/napi_defer_hard_irqs",
                   "/sys/class/net/va/gro_flush_timeout"] + glob.glob("/proc/sys/net/core/*")):
    try:
        out[path] = open(path).read()
    except OSError as err:
        out[path] = f"unreadable: {err.errno}"
for opt in ("-l", "-k"):
    out["ethtool " + opt] = subprocess.run(["ethtool", opt, "va"], capture_output=True, text=True).stdout
print(json.dumps(out))
"""


def _host_snapshot() -> dict[str, str]:
    """The host's values a mistaken test could change: global sysctls, THP, hugepages, every IRQ, eth0."""
    paths = [f"/proc/sys/net/core/{n}" for n in ("rmem_max", "rmem_default", "netdev_max_backlog", "busy_read",
                                                 "busy_poll")]
    paths += ["/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/mm/transparent_hugepage/defrag"]
    paths += glob.glob("/sys/kernel/mm/hugepages/*/nr_hugepages")
    paths += glob.glob("/sys/devices/system/node/node*/hugepages/*/nr_hugepages")
    paths += glob.glob("/sys/devices/system/cpu/cpufreq/policy*/scaling_governor")
    paths += glob.glob("/proc/irq/*/smp_affinity_list")
    # Only the host's own NIC: other tests may add and remove interfaces in the host namespace meanwhile.
    paths += glob.glob(f"/sys/class/net/{HOST_NIC}/queues/*/*ps_cpus")
    paths += [f"/sys/class/net/{HOST_NIC}/{a}" for a in ("napi_defer_hard_irqs", "gro_flush_timeout", "threaded")]
    out = {}
    for path in sorted(paths):
        try:
            out[path] = Path(path).read_text()
        except OSError as err:
            out[path] = f"unreadable: {err.errno}"
    for opt in ("-l", "-g", "-c", "-k"):
        out[f"ethtool {opt} {HOST_NIC}"] = subprocess.run(["ethtool", opt, HOST_NIC], capture_output=True,
                                                          text=True).stdout
    return out


@pytest.fixture
def netns():
    name = f"appl-tune-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "va", "numrxqueues", "4", "numtxqueues", "4", "type",
                        "veth", "peer", "vb", "numrxqueues", "4", "numtxqueues", "4"], check=True)
        for dev in ("va", "vb"):
            subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _in(ns: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, cwd=REPO)


def _tune(ns: str, *args: str) -> subprocess.CompletedProcess:
    return _in(ns, sys.executable, "-m", "appliance", "tune", *args)


def _ns_snapshot(ns: str) -> dict[str, str]:
    done = _in(ns, sys.executable, "-c", NS_SNAPSHOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_veth_apply_verify_revert_in_a_namespace(netns, tmp_path):
    profile = tmp_path / "veth.toml"
    profile.write_text(PROFILE)
    state = tmp_path / "state.json"
    core = str(max(os.sched_getaffinity(0)))
    common = ["--profile", str(profile), "--iface", "va", "--cores", core]
    # Non-default values apply must change and revert must bring back, including on rx-3, which the
    # channel change deletes.
    setup = _in(netns, "sh", "-ec", "echo 1 > /sys/class/net/va/queues/rx-3/rps_cpus;"
                "echo 1 > /sys/class/net/va/queues/rx-0/rps_cpus; echo 1 > /sys/class/net/va/queues/tx-1/xps_cpus;"
                "echo 3 > /sys/class/net/va/napi_defer_hard_irqs; echo 5000 > /sys/class/net/va/gro_flush_timeout;"
                "ethtool -K va gro on")
    assert setup.returncode == 0, setup.stderr
    host_before = _host_snapshot()
    before = _ns_snapshot(netns)

    done = _tune(netns, "plan", *common, "--json")
    assert done.returncode == 0, done.stderr
    rows = {s["key"]: s for s in json.loads(done.stdout)["settings"]}
    assert (rows["va channels rx"]["current"], rows["va channels rx"]["target"]) == (4, 1)
    unsupported = {k for k, s in rows.items() if s["status"] == "unsupported"}
    assert {"va rings", "va coalescing", "va pause", "va irqs"} <= unsupported
    assert {"net.core.rmem_max", "net.core.rmem_default", "net.core.netdev_max_backlog", "net.core.busy_read",
            "net.core.busy_poll"} <= unsupported
    assert {k for k, s in rows.items() if s["status"] == "disabled"} == {"irqbalance", "hugepages", "governor", "thp"}
    assert rows["va rx-gro"]["status"] == "change" and rows["va rx-0 rps_cpus"]["status"] == "change"

    done = _tune(netns, "apply", *common, "--state", str(state))
    assert done.returncode == 0, done.stderr
    assert "changed va channels rx: 4 -> 1" in done.stdout
    tuned = _ns_snapshot(netns)
    assert sorted({p.split("/")[6] for p in tuned if "/queues/" in p}) == ["rx-0", "tx-0", "tx-1", "tx-2", "tx-3"]
    assert tuned["/sys/class/net/va/queues/rx-0/rps_cpus"].strip("0\n,") == ""
    assert tuned["/sys/class/net/va/queues/tx-1/xps_cpus"].strip("0\n,") == ""
    assert tuned["/sys/class/net/va/napi_defer_hard_irqs"] == "0\n"
    assert tuned["/sys/class/net/va/gro_flush_timeout"] == "0\n"
    assert "generic-receive-offload: off" in tuned["ethtool -k"]

    done = _tune(netns, "verify", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    done = _tune(netns, "apply", *common, "--state", str(state))
    assert done.returncode == 0, done.stderr
    assert "nothing to change: all 11 supported settings are already at target" in done.stdout
    assert "changed " not in done.stdout
    assert _ns_snapshot(netns) == tuned

    assert _in(netns, "sh", "-c", "echo 7 > /sys/class/net/va/napi_defer_hard_irqs").returncode == 0
    done = _tune(netns, "verify", "--state", str(state), "--json")
    assert done.returncode == 1
    assert [d["key"] for d in json.loads(done.stdout)["drift"]] == ["va napi_defer_hard_irqs"]

    done = _tune(netns, "revert", "--state", str(state))
    assert done.returncode == 0, done.stderr
    assert _ns_snapshot(netns) == before
    assert not state.exists()
    assert _host_snapshot() == host_before
