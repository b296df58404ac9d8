"""What needs a reboot (reported, never applied) and what makes the tuning survive one (``--persist``)."""
from __future__ import annotations

import shlex

from provisioning.accessors import ConfigFile, Link
from provisioning.context import Context
from provisioning.settings import CHANGE, CHANGED, OK, REBOOT, Setting
from provisioning.topology import format_cpulist, parse_cpulist

BOOT_PARAMS = ("isolcpus", "nohz_full", "rcu_nocbs")
ISOLCPUS_FLAGS = ("managed_irq", "domain")  # keep managed IRQs and the scheduler's load balancing off them

UNIT_NAME = "appliance-tune.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
WANTS_TARGET = f"../{UNIT_NAME}"
SYSCTL_DROPIN = "/etc/sysctl.d/90-appliance-tune.conf"
PERSIST_REASON = "re-applies the tuning at boot: sysctls early from sysctl.d, the rest from a oneshot unit"


def cmdline_param(cmdline: str, name: str) -> str | None:
    """The value of the last ``name=value`` on the kernel command line (the kernel honours the last)."""
    value = None
    for token in cmdline.split():
        if token.startswith(name + "="):
            value = token[len(name) + 1:]
    return value


def _cpus_of(value: str) -> set[int]:
    """CPUs in a boot parameter; isolcpus prefixes its list with flags (``managed_irq,domain,2-5``)."""
    parts = [p for p in value.split(",") if p[:1].isdigit()]
    return set(parse_cpulist(",".join(parts)))


def boot(ctx: Context, cfg: dict) -> list[Setting]:
    cmdline = ctx.host.fs.read_text("/proc/cmdline").strip()
    cores = set(ctx.all_cores)
    rows = []
    for param in BOOT_PARAMS:
        value = cmdline_param(cmdline, param)
        have = _cpus_of(value) if value else set()
        current = f"{param}={value}" if value is not None else "absent"
        if cores <= have:
            rows.append(Setting("boot", param, cfg["reason"], current=current, target=current, status=OK))
            continue
        cpus = format_cpulist(have | cores)
        if param == "isolcpus":
            flags = [p for p in (value or "").split(",") if p and not p[:1].isdigit()] or list(ISOLCPUS_FLAGS)
            want = f"{param}={','.join(flags + [cpus])}"
        else:
            want = f"{param}={cpus}"
        rows.append(Setting("boot", param, cfg["reason"], current=current, target=want, status=REBOOT,
                            note=f"put {want} on the kernel command line and reboot"))
    return rows


def reboot_cmdline(rows: list[Setting]) -> str:
    """The kernel command line parameters to add, in one string, or '' when none is missing."""
    return " ".join(str(s.target) for s in rows if s.status == REBOOT)


def systemd_escape(name: str) -> str:
    """``systemd-escape`` for a device name inside a unit name (``-`` becomes ``\\x2d``)."""
    out = []
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.isalnum() or ch in ":_") or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return "".join(out)


def sysctl_dropin(ctx: Context) -> str | None:
    rows = [s for s in ctx.built if s.knob == "sysctl" and s.status in (OK, CHANGE, CHANGED)]
    if not rows:
        return None
    lines = [f"# Written by 'appliance tune apply --persist' (profile {ctx.profile.name}); "
             "'appliance tune revert' removes it."]
    for s in rows:
        value = max(s.current, s.target) if s.at_least else s.target
        lines.append(f"{s.key} = {value}")
    return "\n".join(lines) + "\n"


def unit_text(ctx: Context) -> str:
    devices = " ".join(f"sys-subsystem-net-devices-{systemd_escape(t.iface)}.device" for t in ctx.targets)
    names = ", ".join(t.iface for t in ctx.targets)
    return "\n".join([
        "# Written by 'appliance tune apply --persist'; 'appliance tune revert' removes it.",
        "[Unit]",
        f"Description=Capture host tuning (appliance tune, profile {ctx.profile.name} on {names})",
        # The NIC must exist before its queues can be tuned; irqbalance must have started so stopping it
        # sticks; sysctl.d has run so this unit's sysctl writes are the last word.
        f"Requires={devices}",
        f"After={devices} systemd-sysctl.service irqbalance.service",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={shlex.join(ctx.boot_command or [])}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def persist(ctx: Context, cfg: dict) -> list[Setting]:
    if not ctx.persist:
        return []
    if not ctx.boot_command:
        raise ValueError("--persist needs the command the boot unit runs")
    dropin, unit, link = persist_accessors(ctx.host.fs, ctx.host.services)
    return [
        Setting("persist", "sysctl.d drop-in", PERSIST_REASON, dropin, target=sysctl_dropin(ctx)),
        Setting("persist", "boot unit", PERSIST_REASON, unit, target=unit_text(ctx)),
        Setting("persist", "boot unit enabled", PERSIST_REASON, link, target=WANTS_TARGET),
    ]


def persist_accessors(fs, services) -> tuple[ConfigFile, ConfigFile, Link]:
    """The three things ``--persist`` writes: all that this knob may change under /etc."""
    return (ConfigFile(fs, SYSCTL_DROPIN, anchor="/etc/sysctl.d"),
            ConfigFile(fs, UNIT_PATH, services, anchor="/etc/systemd/system"),
            Link(fs, WANTS_LINK, anchor="/etc/systemd/system"))
