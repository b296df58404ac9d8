"""Unit tests of the provisioning building blocks: CPU-set notation, IRQ names, HostFS, profiles, text edits."""
from __future__ import annotations

import os

import pytest

from provisioning.errors import ProfileError
from provisioning.hostfs import HostFS
from provisioning.irqs import queue_of
from provisioning.knobs.boot import cmdline_param, systemd_escape
from provisioning.knobs.system import banned_config
from provisioning.profile import BUILTIN, KNOB_KEYS, load
from provisioning.topology import format_cpulist, format_cpumask, parse_cpulist, parse_cpumask


# -- CPU sets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, cpus", [
    ("", []), ("0", [0]), ("0-3", [0, 1, 2, 3]), ("1,3,5-6", [1, 3, 5, 6]), ("4-7,12", [4, 5, 6, 7, 12]),
    ("0-1\n", [0, 1]),
])
def test_cpulist_parses_and_prints_canonically(text, cpus):
    assert parse_cpulist(text) == cpus
    assert format_cpulist(cpus) == text.strip()


def test_cpulist_merges_runs_and_duplicates():
    assert format_cpulist([6, 4, 5, 5, 9, 11, 10]) == "4-6,9-11"


@pytest.mark.parametrize("like, mask, out", [
    ("00", 0, "00"), ("ff", 0x30, "30"), ("3", 2, "2"),
    ("00000000,00000000", 0x1_0000_00f0, "00000001,000000f0"),
])
def test_cpumask_keeps_the_kernel_layout(like, mask, out):
    assert format_cpumask(mask, like) == out
    assert parse_cpumask(out) == mask


def test_cpumask_refuses_cpus_the_kernel_does_not_have():
    with pytest.raises(ValueError):
        format_cpumask(0x100, "ff")


# -- which vector serves which queue ----------------------------------------------------------------------
@pytest.mark.parametrize("name, iface, queue", [
    ("i40e-ens1f0-TxRx-3", "ens1f0", 3),
    ("i40e-0000:81:00.0:misc", "ens1f0", None),
    ("ens1f0-TxRx-0", "ens1f0", 0),
    ("ens1f0-rx-5", "ens1f0", 5),
    ("ens1f0-3", "ens1f0", 3),
    ("ens1f0", "ens1f0", None),                        # ixgbe's link-state vector: just the name
    ("eth1", "eth1", None),
    ("mlx5_comp7@pci:0000:81:00.0", "ens1f0np0", 7),
    ("mlx5_async0@pci:0000:81:00.0", "ens1f0np0", None),
    ("virtio2-input.1", "eth0", 1),
    ("virtio2-output.1", "eth0", 1),
    ("virtio2-config", "eth0", None),
    ("ice-ens2f0-TxRx-12", "ens2f0", 12),
])
def test_queue_of_reads_driver_vector_names(name, iface, queue):
    assert queue_of(name, iface) == queue


# -- HostFS ------------------------------------------------------------------------------------------------
def test_hostfs_write_records_old_value_then_writes(tmp_path):
    (tmp_path / "proc/sys/net/core").mkdir(parents=True)
    (tmp_path / "proc/sys/net/core/busy_read").write_text("0\n")
    fs = HostFS(tmp_path)
    record = fs.write("/proc/sys/net/core/busy_read", "50")
    assert (record.old, record.new) == ("0", "50")
    assert fs.read("/proc/sys/net/core/busy_read") == "50"
    assert fs.journal == [record]


def test_hostfs_dry_run_records_and_does_not_write(tmp_path):
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys/a").write_text("1\n")
    fs = HostFS(tmp_path, dry_run=True)
    fs.write("/sys/a", "2")
    fs.put_file("/etc/x.conf", "new\n")
    fs.put_link("/etc/l", "target")
    assert (tmp_path / "sys/a").read_text() == "1\n"
    assert not (tmp_path / "etc").exists()
    assert [(w.path, w.old, w.new) for w in fs.journal] == [
        ("/sys/a", "1", "2"), ("/etc/x.conf", None, "new\n"), ("/etc/l", None, "target")]


def test_hostfs_never_creates_a_missing_attribute(tmp_path):
    fs = HostFS(tmp_path)
    with pytest.raises(FileNotFoundError):
        fs.write("/sys/class/net/typo0/napi_defer_hard_irqs", "0")
    assert not (tmp_path / "sys").exists()


def test_hostfs_read_only_attribute_is_seen_by_mode_not_by_access(tmp_path):
    (tmp_path / "ro").write_text("1\n")
    os.chmod(tmp_path / "ro", 0o444)
    (tmp_path / "rw").write_text("1\n")
    fs = HostFS(tmp_path)
    assert not fs.is_writable("/ro")
    assert fs.is_writable("/rw")
    assert not fs.is_writable("/missing")


def test_hostfs_files_and_links_round_trip_to_absent(tmp_path):
    fs = HostFS(tmp_path)
    fs.put_file("/etc/sysctl.d/90-x.conf", "a = 1\n", 0o600)
    assert (tmp_path / "etc/sysctl.d/90-x.conf").stat().st_mode & 0o777 == 0o600
    fs.put_link("/etc/systemd/system/w/u.service", "../u.service")
    assert os.readlink(tmp_path / "etc/systemd/system/w/u.service") == "../u.service"
    fs.put_file("/etc/sysctl.d/90-x.conf", None)
    fs.put_link("/etc/systemd/system/w/u.service", None)
    assert fs.read_file("/etc/sysctl.d/90-x.conf") is None
    assert fs.read_link("/etc/systemd/system/w/u.service") is None
    assert os.listdir(tmp_path / "etc/sysctl.d") == []


def test_hostfs_resolve_stays_inside_the_root(tmp_path):
    (tmp_path / "sys/devices/x").mkdir(parents=True)
    (tmp_path / "sys/class").mkdir(parents=True)
    os.symlink("../devices/x", tmp_path / "sys/class/x")
    os.symlink("/etc", tmp_path / "sys/class/escape")
    fs = HostFS(tmp_path)
    assert fs.resolve("/sys/class/x") == "/sys/devices/x"
    with pytest.raises(ValueError):
        fs.resolve("/sys/class/escape")


# -- profiles ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profiles_cover_every_knob_with_a_reason(name):
    profile = load(name)
    assert set(profile.knobs) == set(KNOB_KEYS)
    for knob, table in profile.knobs.items():
        assert table["reason"].strip() and "\n" not in table["reason"], knob
    assert set(profile.sysctls) == {"net.core.rmem_max", "net.core.rmem_default", "net.core.netdev_max_backlog",
                                    "net.core.busy_read", "net.core.busy_poll"}
    assert all(s["reason"] for s in profile.sysctls.values())


def test_profile_extends_and_overrides_key_by_key(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('extends = "latency"\n[capture]\ninterfaces = ["ens1f0"]\ncores = "4-5"\n'
                    '[knobs.coalesce]\nrx_usecs = 8\n[knobs.governor]\nenabled = false\n'
                    'reason = "the BIOS pins the clock"\n'
                    '[sysctl."net.core.busy_poll"]\nvalue = 0\n')
    profile = load(str(path))
    assert profile.name == "site" and profile.source == str(path.resolve())
    assert profile.reference == str(path.resolve())
    assert profile.knob("coalesce") == {"adaptive_rx": False, "rx_usecs": 8,
                                        "reason": load("latency").knob("coalesce")["reason"]}
    assert not profile.enabled("governor")
    assert profile.sysctls["net.core.busy_poll"]["value"] == 0
    assert profile.sysctls["net.core.busy_poll"]["reason"]
    assert profile.capture == {"cores": "4-5", "queues": "auto", "interfaces": ["ens1f0"]}


@pytest.mark.parametrize("body, message", [
    ('[knobs.coalesce]\nreason = "x"\nrx_usec = 3\n', "unknown key 'rx_usec'"),
    ('[knobs.turbo]\nreason = "x"\n', "unknown knob 'turbo'"),
    ('[knobs.rings]\nrx = "max"\n', "needs a 'reason'"),
    ('[knobs.thp]\nreason = "x"\nmode = "sometimes"\n', "knobs.thp.mode must be one of"),
    ('[knobs.rings]\nreason = "x"\nrx = -1\n', 'must be "max" or a whole number'),
    ('[sysctl."rmem max"]\nvalue = 1\nreason = "x"\n', "not a sysctl name"),
    ('[capture]\ncores = "all"\n', "capture.cores must be"),
    ('name = "x"\n[knobs\n', "not valid TOML"),
    ('extends = "nope"\n', "no profile 'nope'"),
])
def test_profile_errors_are_one_sentence(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(".", r"\.")) as err:
        load(str(path))
    assert "\n" not in str(err.value).strip()


def test_profile_cannot_extend_itself(tmp_path):
    path = tmp_path / "loop.toml"
    path.write_text(f'extends = "{path}"\n')
    with pytest.raises(ProfileError, match="extends itself"):
        load(str(path))


# -- small text edits --------------------------------------------------------------------------------------
def test_irqbalance_ban_keeps_other_lines_and_adds_bans():
    text = '#comment\nONESHOT="0"\nIRQBALANCE_ARGS="--hintpolicy=subset --banirq=7"\nIRQBALANCE_BANNED_CPULIST=1\n'
    out = banned_config(text, [4, 5, 6], [121, 122, 7])
    assert out.splitlines() == [
        "#comment", 'ONESHOT="0"', "IRQBALANCE_BANNED_CPULIST=4-6",
        "IRQBALANCE_ARGS='--hintpolicy=subset --banirq=7 --banirq=121 --banirq=122'"]
    assert banned_config(out, [4, 5, 6], [121, 122, 7]) == out  # idempotent
    assert banned_config(None, [4], []).splitlines() == ["IRQBALANCE_BANNED_CPULIST=4", 'IRQBALANCE_ARGS=""']


def test_cmdline_param_takes_the_last_occurrence():
    line = "ro isolcpus=2 quiet isolcpus=managed_irq,domain,4-7 nohz_full=4-7"
    assert cmdline_param(line, "isolcpus") == "managed_irq,domain,4-7"
    assert cmdline_param(line, "rcu_nocbs") is None


@pytest.mark.parametrize("name, escaped", [("ens1f0", "ens1f0"), ("br-cap", "br\\x2dcap"), ("a.b", "a.b"),
                                           (".x", "\\x2ex")])
def test_systemd_escape_matches_systemd_escape(name, escaped):
    assert systemd_escape(name) == escaped
