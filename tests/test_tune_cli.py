"""``appliance tune`` through the CLI dispatcher, on the fake machine: exit codes, messages, text and JSON."""
from __future__ import annotations

import json
import sys

import pytest

import appliance.commands.tune as tune
from appliance.cli import main
from fakesys import machine
from provisioning.nic import RecordingNic


@pytest.fixture
def fake(tmp_path, monkeypatch):
    m = machine(tmp_path)

    def make_host(root, dry_run):
        assert root == str(m.root)
        host = m.host_view(dry_run=dry_run)
        if dry_run:
            host.nic = RecordingNic(m.nic)
        return host

    monkeypatch.setattr(tune, "make_host", make_host)
    return m


def _tuned(m):
    """The machine minus /var/lib/appliance (where the default state file lives under the fake root)."""
    files, nic, services = m.snapshot()
    return {k: v for k, v in files.items() if not k.startswith("var")}, nic, services


def _run(capsys, m, *argv):
    code = main(["tune", *argv, "--root", str(m.root)])
    out, err = capsys.readouterr()
    return code, out, err


def test_without_root_one_sentence_and_exit_77(capsys, monkeypatch):
    monkeypatch.setattr(tune.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(tune, "make_host", lambda *a: pytest.fail("must refuse before touching the host"))
    for action in (["apply", "--iface", "ens1f0"], ["revert"]):
        code = main(["tune", *action])
        out, err = capsys.readouterr()
        assert code == 77 and out == ""
        assert err.count("\n") == 1 and err.startswith(f"appliance: tune {action[0]} changes kernel settings and "
                                                       "must run as root")


def test_plan_table_and_json(capsys, fake):
    code, out, _ = _run(capsys, fake, "plan", "--iface", "ens1f0")
    assert code == 0
    assert "ens1f0: NUMA node 1, capture cores 4,6, 2 queues wanted" in out
    assert "kernel command line to add, then reboot: isolcpus=managed_irq,domain,4,6 nohz_full=4,6 rcu_nocbs=4,6" in out
    header = next(line for line in out.splitlines() if line.startswith("KNOB"))
    assert header.split() == ["KNOB", "SETTING", "CURRENT", "TARGET", "STATUS", "WHY"]
    assert "32 settings: 21 to change, 8 already at target, 3 need a reboot" in out

    code, out, _ = _run(capsys, fake, "plan", "--iface", "veth0", "--cores", "4", "--json")
    data = json.loads(out)
    assert code == 0 and data["targets"] == [{"iface": "veth0", "numa_node": None, "cores": [4], "queues": 1}]
    status = {s["key"]: s["status"] for s in data["settings"]}
    assert status["veth0 channels rx"] == "change"
    assert {k for k, v in status.items() if v == "unsupported"} == {
        "veth0 rings", "veth0 coalescing", "veth0 pause", "veth0 irqs"}
    assert data["reboot_cmdline"] == "isolcpus=managed_irq,domain,4 nohz_full=4 rcu_nocbs=4"


def test_apply_idempotent_verify_revert(capsys, fake):
    before = _tuned(fake)
    code, out, _ = _run(capsys, fake, "apply", "--profile", "latency", "--iface", "ens1f0")
    assert code == 0
    assert "changed ens1f0 channels combined: 8 -> 2" in out
    assert "changed ens1f0 irq 121 i40e-ens1f0-TxRx-0: 0-7 -> 4" in out
    assert "applied 21 changes (profile latency), 8 already at target; old values saved in " in out
    assert (fake.root / "var/lib/appliance/tune-state.json").is_file()

    code, out, _ = _run(capsys, fake, "apply", "--profile", "latency", "--iface", "ens1f0")
    assert code == 0 and out.startswith("nothing to change: all 29 supported settings are already at target")

    code, out, _ = _run(capsys, fake, "verify")
    assert code == 0 and "all 29 settings match the applied plan (profile latency on ens1f0)" in out

    (fake.root / "proc/sys/net/core/busy_read").write_text("0\n")
    code, out, _ = _run(capsys, fake, "verify", "--json")
    data = json.loads(out)
    assert code == 1 and [d["key"] for d in data["drift"]] == ["net.core.busy_read"] and data["ok"] == 28

    code, out, _ = _run(capsys, fake, "revert")
    # busy_read was put back at its saved value by hand above, so revert finds it already there
    assert code == 0 and "restored 20 settings of profile latency on ens1f0, 9 already held" in out
    assert _tuned(fake) == before


def test_dry_run_shows_the_exact_writes(capsys, fake):
    before = fake.snapshot()
    code, out, _ = _run(capsys, fake, "apply", "--iface", "ens1f0", "--dry-run")
    assert code == 0
    assert "would change net.core.busy_poll: 0 -> 50" in out
    assert "  write '4' to /proc/irq/121/smp_affinity_list (now '0-7')" in out
    assert "  ethtool set_channels ens1f0 combined_count=2" in out
    assert fake.snapshot() == before


def test_revert_dry_run_lists_the_restores_and_keeps_the_state(capsys, fake):
    assert _run(capsys, fake, "apply", "--iface", "ens1f0")[0] == 0
    tuned = fake.snapshot()
    code, out, _ = _run(capsys, fake, "revert", "--dry-run")
    assert code == 0
    assert "would restore ens1f0 channels combined" in out
    assert "  write '0-7' to /proc/irq/121/smp_affinity_list (now '4')" in out
    assert "  ethtool set_channels ens1f0 combined_count=8" in out
    assert fake.snapshot() == tuned


def test_operator_errors_are_one_line(capsys, fake):
    code, out, err = _run(capsys, fake, "plan", "--iface", "nope0")
    assert code == 2 and out == ""
    assert err == "appliance: interface 'nope0' does not exist (interfaces here: ens1f0, ens1f1, eth0, veth0)\n"

    code, _, err = _run(capsys, fake, "plan")
    assert code == 2 and err == "appliance: no capture interface named: pass --iface IF (tune never guesses one)\n"

    code, _, err = _run(capsys, fake, "verify")
    assert code == 2 and err.startswith("appliance: nothing to verify: no tuning has been applied")

    code, _, err = _run(capsys, fake, "plan", "--iface", "ens1f0", "--profile", "fast")
    assert code == 2 and "no profile 'fast'" in err


def test_failed_apply_exits_1_after_rolling_back(capsys, fake):
    import errno

    before = _tuned(fake)
    fake.fs.fail["/proc/sys/net/core/busy_read"] = OSError(errno.EINVAL, "Invalid argument")
    code, out, err = _run(capsys, fake, "apply", "--iface", "ens1f0")
    assert code == 1 and out == ""
    assert err == ("appliance: net.core.busy_read: writing 50 to /proc/sys/net/core/busy_read failed: Invalid argument; "
                   "everything this run changed was rolled back\n")
    assert _tuned(fake) == before
    assert not (fake.root / "var/lib/appliance/tune-state.json").exists()


def test_persist_unit_runs_this_python_with_the_same_options(capsys, fake, tmp_path):
    state = tmp_path / "st.json"
    code, out, _ = _run(capsys, fake, "apply", "--iface", "ens1f0", "--cores", "4-5", "--persist",
                        "--state", str(state))
    assert code == 0 and "systemd reloaded its unit files" in out
    unit = (fake.root / "etc/systemd/system/appliance-tune.service").read_text()
    assert (f"ExecStart={sys.executable} -m appliance tune apply --profile latency --iface ens1f0 --cores 4-5 "
            f"--state {state}") in unit
    code, _, _ = _run(capsys, fake, "revert", "--state", str(state))
    assert code == 0 and not (fake.root / "etc/systemd/system/appliance-tune.service").exists()


def test_help_lists_the_actions_and_hides_root(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    out = capsys.readouterr().out
    assert all(action in out for action in ("plan", "apply", "verify", "revert"))
    with pytest.raises(SystemExit):
        main(["tune", "apply", "--help"])
    out = capsys.readouterr().out
    assert "--persist" in out and "--dry-run" in out and "--root" not in out
