"""apply / verify / revert on the fake two-node machine: exact restore, idempotence, rollback, drift, persist."""
from __future__ import annotations

import errno
import json

import pytest

from fakesys import machine
from provisioning import ApplyError, Context, StateError, apply, load, resolve, revert, verify
from provisioning.knobs.boot import SYSCTL_DROPIN, UNIT_PATH, WANTS_LINK
from provisioning.settings import CHANGE, CHANGED, OK, UNSUPPORTED

NIC = "sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0/net/ens1f0"
POLICY6 = "/sys/devices/system/cpu/cpufreq/policy6/scaling_governor"
NODE1_2M = "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"


def _ctx(host, profile="throughput", ifaces=("ens1f0",), persist=False):
    prof = load(profile)
    ctx = Context(host, prof, resolve(host, prof, list(ifaces)), persist=persist)
    if persist:
        ctx.boot_command = ["/usr/bin/python3", "-m", "appliance", "tune", "apply", "--profile", prof.reference,
                            "--iface", "ens1f0", "--state", "/var/lib/appliance/tune-state.json"]
    return ctx


def _dirty(m):
    """Non-default values that a channel shrink destroys and revert must bring back."""
    (m.root / NIC / "queues/rx-5/rps_cpus").write_text("30\n")
    (m.root / NIC / "queues/tx-6/xps_cpus").write_text("c0\n")
    (m.root / "proc/irq/127/smp_affinity_list").write_text("2-3\n")  # ens1f0 queue 5's vector


def _read(m, rel):
    return (m.root / rel.lstrip("/")).read_text().rstrip("\n")


def test_apply_verify_revert_restores_every_value_byte_for_byte(tmp_path):
    m = machine(tmp_path)
    _dirty(m)
    before = m.snapshot()
    state = tmp_path / "state.json"

    result = apply(_ctx(m.host), state)

    changed = {s.key for s in result.rows if s.status == CHANGED}
    assert changed == {
        "irqbalance", "ens1f0 channels combined", "ens1f0 ring rx", "ens1f0 coalesce use_adaptive_rx_coalesce",
        "ens1f0 rx-gro", "ens1f0 pause autoneg", "ens1f0 pause rx", "ens1f0 pause tx",
        "ens1f0 irq 121 i40e-ens1f0-TxRx-0", "ens1f0 irq 122 i40e-ens1f0-TxRx-1",
        "ens1f0 napi_defer_hard_irqs", "ens1f0 gro_flush_timeout", "ens1f0 threaded",
        "net.core.rmem_max", "net.core.rmem_default", "net.core.netdev_max_backlog",
        "hugepages 2 MB node 1", "hugepages 1 GB node 1", "governor policy4 (cpus 4)", "governor policy6 (cpus 6)",
        "transparent hugepages defrag"}
    assert m.nic.ports["ens1f0"]["channels"]["combined_count"] == 2
    assert m.nic.ports["ens1f0"]["rings"]["rx"] == 4096
    assert m.nic.ports["ens1f0"]["coalesce"]["use_adaptive_rx_coalesce"] == 0
    assert m.nic.ports["ens1f0"]["coalesce"]["rx_coalesce_usecs"] == 50
    assert m.nic.ports["ens1f0"]["features"]["rx-gro"] == (False, True)
    assert m.nic.ports["ens1f0"]["pause"] == {"autoneg": False, "rx": False, "tx": False}
    assert m.services.units["irqbalance"] == {"active": False}
    assert sorted(p.name for p in (m.root / NIC / "queues").iterdir()) == ["rx-0", "rx-1", "tx-0", "tx-1"]
    assert _read(m, "proc/irq/121/smp_affinity_list") == "4"
    assert _read(m, "proc/irq/122/smp_affinity_list") == "6"
    assert _read(m, "proc/irq/131/smp_affinity_list") == "0-7"  # ens1f1 untouched
    assert _read(m, f"{NIC}/napi_defer_hard_irqs") == "2"
    assert _read(m, f"{NIC}/gro_flush_timeout") == "20000"
    assert _read(m, f"{NIC}/threaded") == "1"
    assert _read(m, "proc/sys/net/core/rmem_max") == "536870912"
    assert _read(m, "proc/sys/net/core/netdev_max_backlog") == "250000"
    assert _read(m, NODE1_2M) == "2048"
    assert _read(m, "sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages") == "2"
    assert _read(m, "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages") == "0"
    assert _read(m, POLICY6) == "performance"
    assert _read(m, "sys/devices/system/cpu/cpufreq/policy5/scaling_governor") == "schedutil"
    assert _read(m, "sys/kernel/mm/transparent_hugepage/defrag") == "always defer [defer+madvise] madvise never"

    _, checks = verify(m.host_view(), state)
    assert [c.key for c in checks if c.drift] == []
    assert len(checks) == len(changed) + sum(1 for s in result.rows if s.status == OK)

    _, reverted = revert(m.host_view(), state)
    assert reverted.failed == [] and len(reverted.restored) == len(changed)
    assert m.snapshot() == before
    assert not state.exists()


def test_second_apply_changes_nothing_and_says_so(tmp_path):
    m = machine(tmp_path)
    state = tmp_path / "state.json"
    apply(_ctx(m.host), state)
    saved = state.read_bytes()
    after_first = m.snapshot()

    again = m.host_view()
    result = apply(_ctx(again), state)

    assert [s.key for s in result.rows if s.status in (CHANGE, CHANGED)] == []
    assert result.changed == []
    assert again.fs.journal == [] and again.fs.writes == 0
    assert m.snapshot() == after_first
    assert state.read_bytes() == saved


def test_reapply_after_drift_keeps_the_original_old_values(tmp_path):
    m = machine(tmp_path)
    before = m.snapshot()
    state = tmp_path / "state.json"
    apply(_ctx(m.host), state)
    (m.root / "proc/sys/net/core/busy_read").write_text("7\n")
    m.nic.ports["ens1f0"]["rings"]["rx"] = 1024

    result = apply(_ctx(m.host_view()), state)
    assert sorted(s.key for s in result.rows if s.status == CHANGED) == ["ens1f0 ring rx", "net.core.busy_read"]
    entries = {e["key"]: e for e in json.loads(state.read_text())["entries"]}
    assert entries["net.core.busy_read"]["old"] == 0 and entries["ens1f0 ring rx"]["old"] == 512

    revert(m.host_view(), state)
    assert m.snapshot() == before


def test_verify_reports_drift(tmp_path):
    m = machine(tmp_path)
    state = tmp_path / "state.json"
    apply(_ctx(m.host, "latency"), state)
    (m.root / "proc/sys/net/core/busy_poll").write_text("0\n")
    (m.root / "proc/irq/122/smp_affinity_list").write_text("0-7\n")
    m.nic.ports["ens1f0"]["features"]["rx-gro"] = (True, True)
    m.services.units["irqbalance"] = {"active": True, "manager": "process", "cmdline": ["irqbalance"]}
    (m.root / "proc/sys/net/core/rmem_max").write_text("999999999\n")  # above an at-least target: no drift

    _, checks = verify(m.host_view(), state)
    drift = {c.key: (c.current, c.target) for c in checks if c.drift}
    assert drift == {
        "net.core.busy_poll": (0, 50),
        "ens1f0 irq 122 i40e-ens1f0-TxRx-1": ("0-7", "6"),
        "ens1f0 rx-gro": (True, False),
        "irqbalance": ({"active": True, "manager": "process", "cmdline": ["irqbalance"]}, {"active": False}),
    }


def test_failure_midway_rolls_back_everything(tmp_path):
    m = machine(tmp_path)
    _dirty(m)
    before = m.snapshot()
    m.fs.fail[POLICY6] = OSError(errno.EBUSY, "Device or resource busy")
    state = tmp_path / "state.json"

    with pytest.raises(ApplyError) as err:
        apply(_ctx(m.host), state)

    assert "governor policy6 (cpus 6)" in str(err.value) and "Device or resource busy" in str(err.value)
    assert "rolled back" in str(err.value) and err.value.rollback_errors == []
    assert m.snapshot() == before
    assert not state.exists()


def test_nic_failure_after_the_channel_change_restores_the_deleted_queues(tmp_path):
    m = machine(tmp_path)
    _dirty(m)
    before = m.snapshot()
    m.nic.fail[("set_coalesce", "ens1f0")] = OSError(errno.EINVAL, "Invalid argument")

    with pytest.raises(ApplyError, match="ens1f0 coalesce use_adaptive_rx_coalesce"):
        apply(_ctx(m.host), tmp_path / "state.json")

    assert m.snapshot() == before  # rx-5's rps_cpus, tx-6's xps_cpus and IRQ 127's affinity are back


def test_failed_reapply_restores_the_previous_state_file(tmp_path):
    m = machine(tmp_path)
    state = tmp_path / "state.json"
    apply(_ctx(m.host), state)
    saved = state.read_bytes()
    (m.root / "proc/sys/net/core/busy_read").write_text("9\n")
    (m.root / POLICY6.lstrip("/")).write_text("powersave\n")
    tuned = m.snapshot()
    m.fs.fail[POLICY6] = OSError(errno.EIO, "Input/output error")

    with pytest.raises(ApplyError):
        apply(_ctx(m.host_view()), state)

    assert state.read_bytes() == saved
    assert m.snapshot() == tuned  # busy_read is back at 9, as this run found it


def test_hugepage_shortfall_is_a_failure_that_rolls_back(tmp_path):
    m = machine(tmp_path)
    before = m.snapshot()
    m.fs.hugepage_limit[NODE1_2M] = 300

    with pytest.raises(ApplyError, match="nr_hugepages reads back 300 after writing 2048"):
        apply(_ctx(m.host), tmp_path / "state.json")
    assert m.snapshot() == before


def test_driver_refusals_at_apply_are_unsupported_not_errors(tmp_path):
    m = machine(tmp_path)
    m.fs.managed_irqs.add(122)
    m.nic.ports["ens1f0"]["features"]["rx-gro"] = (True, False)  # fixed on
    state = tmp_path / "state.json"

    result = apply(_ctx(m.host), state)

    rows = {s.key: s for s in result.rows}
    assert rows["ens1f0 irq 122 i40e-ens1f0-TxRx-1"].status == UNSUPPORTED
    assert "kernel-managed" in rows["ens1f0 irq 122 i40e-ens1f0-TxRx-1"].note
    assert rows["ens1f0 rx-gro"].status == UNSUPPORTED and "fixed" in rows["ens1f0 rx-gro"].note
    assert rows["ens1f0 irq 121 i40e-ens1f0-TxRx-0"].status == CHANGED
    keys = {e["key"] for e in json.loads(state.read_text())["entries"]}
    assert "ens1f0 irq 122 i40e-ens1f0-TxRx-1" not in keys and "ens1f0 rx-gro" not in keys


def test_persist_writes_drop_in_and_unit_and_revert_removes_them(tmp_path):
    m = machine(tmp_path)
    before = m.snapshot()
    (m.root / "proc/sys/net/core/rmem_max").write_text("999999999\n")
    before = m.snapshot()
    state = tmp_path / "state.json"

    apply(_ctx(m.host, persist=True), state)

    dropin = (m.root / SYSCTL_DROPIN.lstrip("/")).read_text()
    assert dropin.splitlines()[1:] == [
        "net.core.rmem_max = 999999999",      # already above the at-least target: the drop-in keeps it
        "net.core.rmem_default = 16777216", "net.core.netdev_max_backlog = 250000",
        "net.core.busy_read = 0", "net.core.busy_poll = 0"]
    unit = (m.root / UNIT_PATH.lstrip("/")).read_text()
    assert "ExecStart=/usr/bin/python3 -m appliance tune apply --profile throughput --iface ens1f0 --state " \
           "/var/lib/appliance/tune-state.json" in unit
    assert "Requires=sys-subsystem-net-devices-ens1f0.device" in unit
    assert "WantedBy=multi-user.target" in unit and "Type=oneshot" in unit
    assert (m.root / WANTS_LINK.lstrip("/")).readlink().as_posix() == "../appliance-tune.service"
    assert m.services.reloads == 1

    again = m.host_view()
    assert apply(_ctx(again, persist=True), state).changed == []

    revert(m.host_view(), state)
    assert m.services.reloads == 2
    assert m.snapshot() == before


def test_irqbalance_ban_mode_edits_its_defaults_and_restarts_it(tmp_path):
    m = machine(tmp_path)
    before = m.snapshot()
    site = tmp_path / "ban.toml"
    site.write_text('extends = "latency"\n[knobs.irqbalance]\nmode = "ban"\n')
    state = tmp_path / "state.json"

    apply(_ctx(m.host, str(site)), state)

    text = (m.root / "etc/default/irqbalance").read_text()
    assert "IRQBALANCE_BANNED_CPULIST=4,6" in text
    assert "--banirq=120 --banirq=121" in text and "--banirq=128" in text and "--banirq=131" not in text
    assert "--hintpolicy=subset" in text
    assert m.services.units["irqbalance"]["active"] and m.services.restarts == ["irqbalance"]

    revert(m.host_view(), state)
    assert m.snapshot() == before
    assert m.services.restarts == ["irqbalance", "irqbalance"]


def test_dry_run_records_the_writes_and_makes_none(tmp_path):
    m = machine(tmp_path)
    before = m.snapshot()
    view = m.host_view(dry_run=True)
    from provisioning.nic import RecordingNic

    view.nic = RecordingNic(m.nic)
    state = tmp_path / "state.json"

    result = apply(_ctx(view), state)

    assert m.snapshot() == before and not state.exists()
    assert {s.status for s in result.rows} >= {CHANGE, OK}
    writes = {(w.path, w.old, w.new) for w in view.fs.journal}
    assert ("/proc/irq/121/smp_affinity_list", "0-7", "4") in writes
    assert ("/proc/sys/net/core/busy_poll", "0", "0") not in writes  # already at target: not written
    assert ("set_channels", "ens1f0", {"combined_count": 2}) in view.nic.calls


def test_a_different_tuning_is_refused_until_reverted(tmp_path):
    m = machine(tmp_path)
    state = tmp_path / "state.json"
    apply(_ctx(m.host), state)
    with pytest.raises(StateError, match="already holds a tuning \\(profile throughput on ens1f0\\)"):
        apply(_ctx(m.host_view(), "latency"), state)


def test_verify_and_revert_without_state(tmp_path):
    m = machine(tmp_path)
    with pytest.raises(StateError, match="nothing to verify"):
        verify(m.host, tmp_path / "none.json")
    with pytest.raises(StateError, match="nothing to revert"):
        revert(m.host, tmp_path / "none.json")


def test_revert_keeps_the_entries_it_could_not_restore(tmp_path):
    m = machine(tmp_path)
    state = tmp_path / "state.json"
    apply(_ctx(m.host), state)
    m.fs.fail[POLICY6] = OSError(errno.EBUSY, "Device or resource busy")

    _, result = revert(m.host_view(), state)

    assert [k for k, _ in result.failed] == ["governor policy6 (cpus 6)"]
    assert [e["key"] for e in json.loads(state.read_text())["entries"]] == ["governor policy6 (cpus 6)"]
    _, result = revert(m.host_view(), state)
    assert result.failed == [] and not state.exists()
    assert _read(m, POLICY6) == "schedutil"


def test_crash_midway_leaves_a_state_that_reverts(tmp_path, monkeypatch):
    """The old value is on disk before each write: kill apply after a write and revert still undoes it."""
    m = machine(tmp_path)
    before = m.snapshot()
    state = tmp_path / "state.json"
    import provisioning.engine as engine

    real = engine._write_checked
    calls = []

    def crash_after_five(accessor, value, at_least, dry_run):
        real(accessor, value, at_least, dry_run)
        calls.append(accessor.where())
        if len(calls) == 5:
            raise SystemExit("power cut")

    monkeypatch.setattr(engine, "_write_checked", crash_after_five)
    monkeypatch.setattr(engine, "_rollback", lambda host, undo: [])   # a dead process rolls nothing back
    monkeypatch.setattr(engine, "remove_state", lambda path: None)
    with pytest.raises(SystemExit):
        apply(_ctx(m.host), state)
    monkeypatch.undo()
    assert m.snapshot() != before

    revert(m.host_view(), state)
    assert m.snapshot() == before


def test_a_second_tune_is_refused_while_one_holds_the_lock(tmp_path):
    from provisioning.state import locked

    m = machine(tmp_path)
    before = m.snapshot()
    state = tmp_path / "state.json"
    with locked(state):
        with pytest.raises(StateError, match="another appliance tune holds"):
            apply(_ctx(m.host), state)
    assert m.snapshot() == before
    apply(_ctx(m.host_view()), state)  # free again
