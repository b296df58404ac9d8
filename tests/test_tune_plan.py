"""``tune plan`` on the fake two-node machine: targets, every knob's row, unsupported knobs, refusals."""
from __future__ import annotations

import pytest

from fakesys import machine
from provisioning import Context, TargetError, load, plan, resolve
from provisioning.settings import CHANGE, DISABLED, OK, REBOOT, UNSUPPORTED


def _plan(m, ifaces=("ens1f0",), profile="latency", **kw):
    prof = load(profile)
    ctx = Context(m.host, prof, resolve(m.host, prof, list(ifaces), **kw))
    return ctx, {s.key: s for s in plan(ctx)}


def test_targets_are_the_nic_node_one_thread_per_core_never_cpu0(tmp_path):
    m = machine(tmp_path)
    ctx, _ = _plan(m)
    (t,) = ctx.targets
    assert (t.iface, t.node, t.cores, t.queues) == ("ens1f0", 1, [4, 6], 2)


def test_plan_rows_for_the_i40e_port(tmp_path):
    m = machine(tmp_path)
    _, rows = _plan(m)

    def row(key):
        s = rows[key]
        return s.current, s.target, s.status

    assert row("irqbalance") == ({"active": True, "manager": "process",
                                  "cmdline": ["/usr/sbin/irqbalance", "--foreground"]}, {"active": False}, CHANGE)
    assert row("ens1f0 channels combined") == (8, 2, CHANGE)
    assert row("ens1f0 ring rx") == (512, 4096, CHANGE)
    assert row("ens1f0 coalesce use_adaptive_rx_coalesce") == (1, 0, CHANGE)
    assert row("ens1f0 coalesce rx_coalesce_usecs") == (50, 0, CHANGE)
    assert row("ens1f0 rx-gro") == (True, False, CHANGE)
    assert row("ens1f0 rx-lro") == (False, False, OK)
    assert row("ens1f0 pause autoneg") == (True, False, CHANGE)
    assert row("ens1f0 irq 121 i40e-ens1f0-TxRx-0") == ("0-7", "4", CHANGE)
    assert row("ens1f0 irq 122 i40e-ens1f0-TxRx-1") == ("0-7", "6", CHANGE)
    assert row("ens1f0 rx-1 rps_cpus") == ("00", "00", OK)
    assert row("ens1f0 napi_defer_hard_irqs") == (0, 0, OK)
    assert row("net.core.rmem_max") == (212992, 268435456, CHANGE) and rows["net.core.rmem_max"].at_least
    assert row("net.core.busy_poll") == (0, 50, CHANGE) and not rows["net.core.busy_poll"].at_least
    assert row("hugepages 2 MB node 1") == (0, 512, CHANGE)
    assert row("governor policy4 (cpus 4)") == ("schedutil", "performance", CHANGE)
    assert row("transparent hugepages enabled") == ("madvise", "never", CHANGE)
    assert row("transparent hugepages defrag") == ("madvise", "never", CHANGE)
    assert row("isolcpus") == ("absent", "isolcpus=managed_irq,domain,4,6", REBOOT)
    assert row("nohz_full") == ("absent", "nohz_full=4,6", REBOOT)
    assert row("rcu_nocbs") == ("absent", "rcu_nocbs=4,6", REBOOT)
    assert rows["hugepages 2 MB node 1"].accessor.where() == \
        "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"


def test_plan_touches_only_the_named_interface_and_the_kept_queues(tmp_path):
    m = machine(tmp_path)
    _, rows = _plan(m)
    irqs = sorted(s.accessor.irq for s in rows.values() if s.knob == "irq_affinity")
    assert irqs == [121, 122]             # queues 0 and 1 of ens1f0; not misc 120, not ens1f1, not eth0
    queues = sorted(s.key for s in rows.values() if s.knob == "rps_xps")
    assert queues == ["ens1f0 rx-0 rps_cpus", "ens1f0 rx-1 rps_cpus", "ens1f0 tx-0 xps_cpus", "ens1f0 tx-1 xps_cpus"]
    assert not [k for k in rows if "ens1f1" in k or "eth0" in k]
    governed = sorted(s.key for s in rows.values() if s.knob == "governor")
    assert governed == ["governor policy4 (cpus 4)", "governor policy6 (cpus 6)"]


def test_plan_changes_nothing(tmp_path):
    m = machine(tmp_path)
    before = m.snapshot()
    _plan(m, profile="throughput")
    assert m.snapshot() == before
    assert m.fs.journal == [] and m.nic.calls == []


def test_one_gb_pages_only_where_the_cpu_has_them(tmp_path):
    with_1g = machine(tmp_path / "a")
    _, rows = _plan(with_1g, profile="throughput")
    assert rows["hugepages 1 GB node 1"].status == CHANGE
    assert rows["hugepages 1 GB node 1"].target == 2
    without = machine(tmp_path / "b", pdpe1gb=False)
    _, rows = _plan(without, profile="throughput")
    assert rows["hugepages 1 GB node 1"].status == UNSUPPORTED
    assert "pdpe1gb" in rows["hugepages 1 GB node 1"].note


def test_virtual_interface_shows_its_unsupported_knobs(tmp_path):
    m = machine(tmp_path)
    _, rows = _plan(m, ["veth0"], cores="4,6")
    assert rows["veth0 channels rx"].target == 2 and rows["veth0 channels rx"].status == CHANGE
    for key, why in [("veth0 rings", "does not support rings"), ("veth0 coalescing", "does not support coalesce"),
                     ("veth0 pause", "does not support pause"), ("veth0 irqs", "no interrupts of its own")]:
        assert rows[key].status == UNSUPPORTED, key
        assert why in rows[key].note, rows[key].note
    # veth has no NUMA node: hugepages go to the system-wide pool
    assert "hugepages 2 MB system-wide" in rows


def test_read_only_and_missing_sysctls_are_unsupported(tmp_path):
    m = machine(tmp_path)
    (m.root / "proc/sys/net/core/rmem_max").chmod(0o444)
    (m.root / "proc/sys/net/core/busy_poll").unlink()
    _, rows = _plan(m)
    assert rows["net.core.rmem_max"].status == UNSUPPORTED and "read-only" in rows["net.core.rmem_max"].note
    assert rows["net.core.busy_poll"].status == UNSUPPORTED and "not visible" in rows["net.core.busy_poll"].note


def test_disabled_knobs_are_listed_as_disabled(tmp_path):
    m = machine(tmp_path)
    site = tmp_path / "site.toml"
    site.write_text('extends = "latency"\n[knobs.governor]\nenabled = false\nreason = "fixed clock in BIOS"\n')
    _, rows = _plan(m, profile=str(site))
    assert rows["governor"].status == DISABLED
    assert not [k for k in rows if k.startswith("governor policy")]


def test_boot_parameters_already_covering_the_cores_are_ok(tmp_path):
    m = machine(tmp_path)
    (m.root / "proc/cmdline").chmod(0o644)
    (m.root / "proc/cmdline").write_text("ro isolcpus=domain,4-7 nohz_full=4-7 rcu_nocbs=2\n")
    _, rows = _plan(m)
    assert rows["isolcpus"].status == OK and rows["nohz_full"].status == OK
    assert rows["rcu_nocbs"].status == REBOOT and rows["rcu_nocbs"].target == "rcu_nocbs=2,4,6"


def test_cores_on_node_zero_skip_cpu0s_core(tmp_path):
    m = machine(tmp_path)
    (m.root / "sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0/numa_node").chmod(0o644)
    (m.root / "sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0/numa_node").write_text("0\n")
    ctx, _ = _plan(m)
    assert ctx.targets[0].cores == [2]


@pytest.mark.parametrize("ifaces, kw, message", [
    ([], {}, "no capture interface named"),
    (["ens9"], {}, "interface 'ens9' does not exist"),
    (["eth0"], {}, "eth0 carries the default route"),
    (["lo"], {}, "loopback"),
    (["ens1f0"], {"cores": "4,9"}, "capture cores 9 for ens1f0 are not online"),
])
def test_refusals(tmp_path, ifaces, kw, message):
    m = machine(tmp_path)
    prof = load("latency")
    with pytest.raises(TargetError, match=message):
        resolve(m.host, prof, ifaces, **kw)


def test_default_route_interface_with_explicit_consent(tmp_path):
    m = machine(tmp_path)
    prof = load("latency")
    (t,) = resolve(m.host, prof, ["eth0"], allow_default_route=True)
    assert (t.iface, t.node, t.cores) == ("eth0", 0, [2])
