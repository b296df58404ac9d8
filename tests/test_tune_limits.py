"""Profile numbers are checked against the range the kernel's type takes, before anything is read or planned."""
from __future__ import annotations

import pytest

import appliance.commands.tune as tune
from appliance.cli import main
from fakesys import machine
from provisioning.errors import ProfileError
from provisioning.profile import load

U32, S32, ULONG = 2**32 - 1, 2**31 - 1, 2**64 - 1


def _profile(tmp_path, body: str) -> str:
    path = tmp_path / "site.toml"
    path.write_text('extends = "latency"\n' + body)
    return str(path)


@pytest.mark.parametrize("body, message", [
    ("[knobs.coalesce]\nrx_usecs = 99999999999999999999\n",
     f"knobs.coalesce.rx_usecs = 99999999999999999999 is out of range: ethtool's u32 rx-usecs takes 0 to {U32}"),
    (f"[knobs.coalesce]\nrx_usecs = {U32 + 1}\n", f"knobs.coalesce.rx_usecs = {U32 + 1} is out of range"),
    (f"[knobs.rings]\nrx = {U32 + 1}\n",
     f"knobs.rings.rx = 4294967296 is out of range: ethtool's u32 rx ring size takes 1 to {U32}"),
    ("[knobs.rings]\ntx = 0\n", f"knobs.rings.tx = 0 is out of range: ethtool's u32 tx ring size takes 1 to {U32}"),
    (f"[knobs.napi]\ndefer_hard_irqs = {S32 + 1}\n",
     f"knobs.napi.defer_hard_irqs = {S32 + 1} is out of range: napi_defer_hard_irqs, which the kernel caps at "
     f"S32_MAX takes 0 to {S32}"),
    (f"[knobs.napi]\ngro_flush_timeout = {ULONG + 1}\n",
     f"knobs.napi.gro_flush_timeout = {ULONG + 1} is out of range"),
    (f"[knobs.hugepages]\npages_2m = {ULONG + 1}\n",
     f"knobs.hugepages.pages_2m = {ULONG + 1} is out of range: nr_hugepages, an unsigned long takes 0 to {ULONG}"),
    (f"[knobs.hugepages]\npages_1g = {ULONG + 1}\n", f"knobs.hugepages.pages_1g = {ULONG + 1} is out of range"),
    (f'[sysctl."net.core.busy_poll"]\nvalue = {S32 + 1}\n',
     f"sysctl.net.core.busy_poll.value = {S32 + 1} is out of range: net.core.busy_poll, an int sysctl takes 0 to "
     f"{S32}"),
    (f'[sysctl."vm.dirty_bytes"]\nvalue = {ULONG + 1}\nreason = "x"\n',
     f"sysctl.vm.dirty_bytes.value = {ULONG + 1} is out of range: the widest integer a sysctl takes"),
    (f"[capture]\nqueues = {U32 + 1}\n",
     f"capture.queues = {U32 + 1} is out of range: ethtool's u32 channel count takes 1 to {U32}"),
    ('[capture]\ncores = "4-99999999999"\n', "CPU 99999999999 in '4-99999999999' is out of range: CPU numbers run "
                                             "from 0 to 8191"),
    ("[capture]\ncores = [4, 8192]\n", "capture.cores names CPU 8192, out of range"),
    ('[capture]\ncores = "7-4"\n', "the CPU range 7-4 runs backwards"),
    ('[capture]\ncores = "4--7"\n', "'4--7' is not a CPU list"),
])
def test_out_of_range_profile_values_are_one_sentence(tmp_path, body, message):
    with pytest.raises(ProfileError) as err:
        load(_profile(tmp_path, body))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_largest_value_of_each_type_is_accepted(tmp_path):
    profile = load(_profile(tmp_path, (
        f"[knobs.coalesce]\nrx_usecs = {U32}\n[knobs.rings]\nrx = {U32}\ntx = 1\n"
        f"[knobs.napi]\ndefer_hard_irqs = {S32}\ngro_flush_timeout = {ULONG}\n"
        f"[knobs.hugepages]\npages_2m = {ULONG}\npages_1g = {ULONG}\n"
        f'[sysctl."net.core.busy_poll"]\nvalue = {S32}\n'
        f'[sysctl."vm.dirty_bytes"]\nvalue = {2**40}\nreason = "large page cache writeback"\n'
        f'[capture]\nqueues = {U32}\ncores = "0-8191"\n')))
    assert profile.knob("coalesce")["rx_usecs"] == U32 and profile.sysctls["vm.dirty_bytes"]["value"] == 2**40


@pytest.fixture
def fake(tmp_path, monkeypatch):
    m = machine(tmp_path)
    monkeypatch.setattr(tune, "make_host", lambda root, dry_run: m.host_view(dry_run=dry_run))
    return m


@pytest.mark.parametrize("action", ["plan", "apply"])
def test_cli_refuses_an_out_of_range_profile_with_exit_2_and_changes_nothing(tmp_path, capsys, fake, action):
    before = fake.snapshot()
    site = _profile(tmp_path, f"[knobs.rings]\nrx = {U32 + 1}\n")
    code = main(["tune", action, "--profile", site, "--iface", "ens1f0", "--root", str(fake.root)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"appliance: knobs.rings.rx = 4294967296 is out of range: ethtool's u32 rx ring size takes 1 to {U32}\n"
    assert fake.snapshot() == before


@pytest.mark.parametrize("cores, message", [
    ("4-x", "'4-x' is not a CPU list such as 4-7 or 1,3,5"),
    ("4-99999999999", "CPU 99999999999 in '4-99999999999' is out of range"),  # would expand to 10^11 CPUs
])
def test_cli_refuses_a_malformed_core_list_in_one_sentence(capsys, fake, cores, message):
    code = main(["tune", "plan", "--iface", "ens1f0", "--cores", cores, "--root", str(fake.root)])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("appliance: capture cores for ens1f0: ") and message in err
    assert err.count("\n") == 1
