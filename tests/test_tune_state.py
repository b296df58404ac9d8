"""A hostile or damaged state file: revert, verify and apply refuse it whole, in one sentence, writing nothing.

Each test applies the throughput profile (with --persist, and with queue values a channel shrink destroys)
to the fake machine, edits the state file the way an attacker or a disk error would, and checks that the
refusal names the problem and that nothing changed: the tree byte for byte, the NIC, the services, the file
outside the root that the edit aimed at, and the state file itself.
"""
from __future__ import annotations

import json
import os

import pytest

import appliance.commands.tune as tune
from appliance.cli import main
from fakesys import machine
from provisioning import StateError, apply, revert, verify
from provisioning.hostfs import HostFS, Outside
from test_tune_apply import _ctx, _dirty

BUSY_READ = "/proc/sys/net/core/busy_read"


@pytest.fixture
def tuned(tmp_path):
    """(machine, state path, outside victim file): the machine tuned, the victim outside its root."""
    m = machine(tmp_path)
    _dirty(m)
    state = tmp_path / "state.json"
    apply(_ctx(m.host, persist=True), state)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    return m, state, victim


def _edit(state, change) -> None:
    data = json.loads(state.read_text())
    change(data)
    state.write_text(json.dumps(data))  # keeps the file's owner and mode


def _entry(data, key) -> dict:
    return next(e for e in data["entries"] if e["key"] == key)


def _refused(m, state, victim, match: str, action=revert) -> str:
    """Run ``action`` on the edited state; it must refuse in one sentence and change nothing at all."""
    before, saved = m.snapshot(), state.read_bytes()
    with pytest.raises(StateError) as err:
        action(m.host_view(), state)
    message = str(err.value)
    assert match in message and "\n" not in message
    assert m.snapshot() == before
    assert victim.read_text() == "precious\n"
    assert state.read_bytes() == saved
    return message


# -- locators that name something tuning never owns ---------------------------------------------------------
@pytest.mark.parametrize("path, match", [
    ("/../victim", "names '/../victim', which the sysctl knob never writes"),
    ("/proc/sys/net/core/../../../../victim", "which the sysctl knob never writes"),
    ("/etc/default/irqbalance", "names '/etc/default/irqbalance', which the sysctl knob never writes"),
    ("/sys/kernel/mm/transparent_hugepage/enabled", "which the sysctl knob never writes"),
    ("/proc/irq/121/smp_affinity_list", "which the sysctl knob never writes"),
])
def test_a_locator_path_edited_to_another_file_is_refused_and_the_file_untouched(tuned, path, match):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, "net.core.busy_read")["locator"].update(path=path))
    message = _refused(m, state, victim, match)
    assert message.startswith(f"refusing the state file {state}: entry ")
    assert message.endswith("nothing was changed (inspect the file, or restore the values by hand)")


def test_an_owned_path_that_symlinks_out_of_proc_is_refused(tuned):
    """The path is one the sysctl knob owns, but on this host it leads outside /proc: the write would follow."""
    m, state, victim = tuned
    attr = m.root / BUSY_READ.lstrip("/")
    attr.unlink()
    attr.symlink_to(victim)
    _refused(m, state, victim, f"{BUSY_READ} leads through a symlink to {str(victim)!r}, outside /proc")


def test_an_etc_directory_that_symlinks_out_of_etc_is_refused(tuned, tmp_path):
    m, state, victim = tuned
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (m.root / "etc/sysctl.d/90-appliance-tune.conf").unlink()
    (m.root / "etc/sysctl.d").rmdir()
    (m.root / "etc/sysctl.d").symlink_to(elsewhere)
    _refused(m, state, victim, "/etc/sysctl.d/90-appliance-tune.conf leads through a symlink to")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("key, change, match", [
    ("ens1f0 ring rx", {"iface": "ens1f1"}, "names the interface 'ens1f1', which is not one this tuning"),
    ("ens1f0 ring rx", {"field": "rx_max"}, "names the ethtool field 'rings' 'rx_max'"),
    ("ens1f0 rx-gro", {"name": "rx-checksum"}, "names the feature 'rx-checksum'"),
    ("irqbalance", {"name": "sshd"}, "names the service 'sshd'"),
    ("boot unit", {"path": "/etc/systemd/system/sshd.service"}, "that the persist knob never writes"),
    ("boot unit", {"anchor": "/etc"}, "that the persist knob never writes"),
    ("ens1f0 threaded", {"codec": "text"}, "reads '/sys/class/net/ens1f0/threaded' as 'text', not as 'int'"),
    ("net.core.busy_read", {"extra": 1}, "has a attr locator with the keys"),
])
def test_locators_outside_what_their_knob_owns_are_refused(tuned, key, change, match):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, key)["locator"].update(change))
    _refused(m, state, victim, match)


def test_an_unknown_locator_kind_is_refused(tuned):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, "net.core.busy_read").update(locator={"kind": "shell", "cmd": "id"}))
    _refused(m, state, victim, "has a locator of kind 'shell', which the sysctl knob never writes")


def test_an_unknown_knob_is_refused(tuned):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, "net.core.busy_read").update(knob="kernel"))
    _refused(m, state, victim, "belongs to an unknown knob 'kernel'")


# -- values of the wrong type or range ----------------------------------------------------------------------
@pytest.mark.parametrize("key, field, value, match", [
    ("net.core.busy_read", "old", "zero", "its old value 'zero' is not an integer the kernel can hold"),
    ("net.core.busy_read", "old", 2**70, "is not an integer the kernel can hold"),
    ("net.core.busy_read", "target", None, "its target value None is not an integer"),
    ("ens1f0 channels combined", "old", "8", "its old value '8' is not an ethtool u32"),
    ("ens1f0 ring rx", "old", 2**32, "is not an ethtool u32 (0 to 4294967295)"),
    ("ens1f0 pause rx", "old", 1, "its old value 1 is not true or false"),
    ("ens1f0 rx-gro", "old", "on", "is not true or false"),
    ("irqbalance", "old", "running", "is not a service state"),
    ("ens1f0 irq 121 i40e-ens1f0-TxRx-0", "old", "0-99999999999", "CPU 99999999999 in '0-99999999999' is out"),
    ("ens1f0 irq 121 i40e-ens1f0-TxRx-0", "old", 7, "is not a CPU list"),
    ("ens1f0 rx-0 rps_cpus", "old", 48, "is not a CPU mask"),
    ("governor policy6 (cpus 6)", "old", "performance\nx", "is not a single word"),
    ("boot unit enabled", "old", "/tmp/evil.service", "is not absent or a link to appliance-tune.service"),
])
def test_a_wrong_typed_value_is_refused_and_again_on_the_next_run(tuned, key, field, value, match):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, key).update({field: value}))
    first = _refused(m, state, victim, match)
    assert _refused(m, state, victim, match) == first  # the same sentence, still nothing written


def test_a_command_line_revert_would_start_as_root_must_be_the_daemon(tuned):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, "irqbalance")["old"].update(cmdline=["/tmp/irqbalance", "--foreground"]))
    _refused(m, state, victim, "would start '/tmp/irqbalance' as root, which is not irqbalance from a system")


def test_collateral_values_are_checked_too(tuned):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, "ens1f0 channels combined")["collateral"][0]["locator"].update(
        path="/proc/sys/kernel/core_pattern"))
    _refused(m, state, victim, "collateral names '/proc/sys/kernel/core_pattern', which the channels knob never")


def test_a_bad_entry_revert_would_reach_last_still_stops_everything(tuned):
    """Revert runs newest first; the first entry (irqbalance) would be its last write.  The old code restored
    every other entry before tripping over it; now nothing is restored."""
    m, state, victim = tuned
    _edit(state, lambda d: d["entries"][0].update(old={"active": "yes"}))
    _refused(m, state, victim, "entry 1 (irqbalance): its old value {'active': 'yes'} is not a service state")


def test_a_control_character_in_a_name_is_refused_and_not_echoed(tuned):
    m, state, victim = tuned
    _edit(state, lambda d: d["entries"][0].update(key="\x1b]0;pwned\x07"))
    message = _refused(m, state, victim, "entry 1 has a missing, unprintable or repeated key")
    assert "\x1b" not in message


# -- who may have written the file --------------------------------------------------------------------------
@pytest.mark.parametrize("mode, shown", [(0o666, "0666"), (0o664, "0664"), (0o646, "0646")])
def test_a_state_file_others_can_write_is_refused(tuned, mode, shown):
    m, state, victim = tuned
    os.chmod(state, mode)
    _refused(m, state, victim, f"is writable by group or others (mode {shown})")
    _refused(m, state, victim, "writable by group or others", action=verify)


def test_a_state_file_that_belongs_to_someone_else_is_refused(tuned, monkeypatch):
    m, state, victim = tuned
    if os.geteuid() == 0:
        os.chown(state, 65534, -1)
        match = "it belongs to uid 65534, not to root, so someone else chose what revert would write"
    else:  # not root: pretend to be another user, so the file's owner is neither root nor the caller
        me = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: me + 1)
        match = f"it belongs to uid {me}, not to root or to uid {me + 1}"
    _refused(m, state, victim, match)


def test_the_state_file_is_written_0644_whatever_the_umask(tmp_path):
    m = machine(tmp_path)
    state = tmp_path / "state.json"
    old = os.umask(0o002)
    try:
        apply(_ctx(m.host), state)
    finally:
        os.umask(old)
    assert state.stat().st_mode & 0o777 == 0o644
    revert(m.host_view(), state)  # trusted: written by this user, nobody else can write it


def test_a_fifo_in_place_of_the_state_file_is_refused_without_waiting(tmp_path):
    m = machine(tmp_path)
    os.mkfifo(tmp_path / "state.json", 0o600)
    with pytest.raises(StateError, match="it is not a regular file"):
        revert(m.host_view(), tmp_path / "state.json")


@pytest.mark.parametrize("text, match", [("{", "is not valid JSON"), ("[" * 100000, "is not valid JSON"),
                                         ('{"version": 1}', "its top level holds ['version']")])
def test_damaged_json_is_one_sentence(tmp_path, text, match):
    m = machine(tmp_path)
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(StateError, match=match.replace("[", r"\[").replace("]", r"\]")):
        revert(m.host_view(), tmp_path / "state.json")


def test_apply_over_a_tampered_state_refuses_before_writing(tuned):
    m, state, victim = tuned
    _edit(state, lambda d: _entry(d, "net.core.busy_read")["locator"].update(path="/../victim"))
    _refused(m, state, victim, "which the sysctl knob never writes", action=lambda host, st: apply(_ctx(host), st))


# -- the command line ---------------------------------------------------------------------------------------
def test_cli_revert_of_a_hostile_state_is_one_line_exit_2(tuned, capsys, monkeypatch):
    m, state, victim = tuned
    monkeypatch.setattr(tune, "make_host", lambda root, dry_run: m.host_view(dry_run=dry_run))
    _edit(state, lambda d: _entry(d, "net.core.busy_read")["locator"].update(path="/../victim"))
    before = m.snapshot()
    for _ in range(2):  # and the same again: the refusal does not consume or damage the file
        code = main(["tune", "revert", "--state", str(state), "--root", str(m.root)])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"appliance: refusing the state file {state}: entry ")
        assert "Traceback" not in err
    assert m.snapshot() == before and victim.read_text() == "precious\n"


# -- every locator the knobs produce is one the checks accept -------------------------------------------------
@pytest.mark.parametrize("profile", ["latency", "throughput", "ban"])
def test_every_locator_the_knobs_write_passes_the_checks(tmp_path, profile):
    m = machine(tmp_path)
    if profile == "ban":
        site = tmp_path / "ban.toml"
        site.write_text('extends = "latency"\n[knobs.irqbalance]\nmode = "ban"\n')
        profile = str(site)
    _dirty(m)
    before = m.snapshot()
    state = tmp_path / "state.json"
    apply(_ctx(m.host, profile, persist=True), state)
    kinds = {e["locator"]["kind"] for e in json.loads(state.read_text())["entries"]}
    assert kinds >= {"ethtool", "feature", "irq", "attr", "file", "link"}
    _, checks = verify(m.host_view(), state)
    assert not [c.key for c in checks if c.drift]
    _, result = revert(m.host_view(), state)
    assert result.failed == [] and m.snapshot() == before


# -- HostFS confines every write, whoever asks ---------------------------------------------------------------
def test_hostfs_refuses_writes_outside_sys_proc_and_etc(tmp_path):
    root = tmp_path / "root"
    (root / "proc/sys").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "proc/sys/a").write_text("1\n")
    (tmp_path / "victim").write_text("precious\n")
    os.symlink(tmp_path / "victim", root / "proc/sys/out")
    os.symlink(tmp_path, root / "etc/outdir")
    fs = HostFS(root)
    for rel in ("/proc/sys/../../../victim", "/victim", "/var/x", "proc/sys/a", "/proc//sys/a", "/proc/sys/out"):
        with pytest.raises(Outside):
            fs.write(rel, "2")
    with pytest.raises(Outside):
        fs.put_file("/etc/outdir/victim", "owned\n")
    with pytest.raises(Outside):
        fs.put_link("/etc/outdir/victim", "/bin/sh")
    with pytest.raises(Outside):
        fs.put_file("/etc/../victim", None)
    assert (tmp_path / "victim").read_text() == "precious\n" and fs.journal == []
    fs.write("/proc/sys/a", "2")
    assert (root / "proc/sys/a").read_text() == "2"
