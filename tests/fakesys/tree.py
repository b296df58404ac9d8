"""A fake /sys, /proc and /etc for a two-node machine with a multi-queue NIC on node 1.

Layout (8 CPUs, SMT pairs (0,1) (2,3) (4,5) (6,7); node 0 = 0-3, node 1 = 4-7):

- ``ens1f0`` and ``ens1f1``: two ports of one i40e-like card at 0000:81:00.0/.1 on node 1, 8 combined
  channels each, vectors ``i40e-0000:81:00.N:misc`` plus ``i40e-ensIfN-TxRx-Q``;
- ``eth0``: the management port on node 0 (carries the default route), virtio-style vectors;
- ``veth0``: a virtual interface (no device, no vectors);
- hugepage pools per node, one cpufreq policy per CPU (schedutil), THP ``madvise``, the five sysctls.

The same directory is the HostFS root; symlinks are relative, as sysfs's are, so they resolve inside it.
"""
from __future__ import annotations

import os
from pathlib import Path

CPUS = 8
NODES = {0: "0-3", 1: "4-7"}
SIBLINGS = {cpu: f"{cpu - cpu % 2}-{cpu - cpu % 2 + 1}" for cpu in range(CPUS)}
CARD = "devices/pci0000:80/0000:80:01.0"
MGMT = "devices/pci0000:00/0000:00:03.0"
# iface -> (pci function dir, numa node, first vector, queue-name pattern, admin vector name)
NICS = {
    "ens1f0": (f"{CARD}/0000:81:00.0", 1, 120, "i40e-ens1f0-TxRx-{q}", "i40e-0000:81:00.0:misc"),
    "ens1f1": (f"{CARD}/0000:81:00.1", 1, 130, "i40e-ens1f1-TxRx-{q}", "i40e-0000:81:00.1:misc"),
}
QUEUES = 8
SYSCTLS = {"rmem_max": "212992", "rmem_default": "212992", "netdev_max_backlog": "1000",
           "busy_read": "0", "busy_poll": "0"}
IRQBALANCE_DEFAULTS = """# irqbalance is a daemon process that distributes interrupts across
# CPUS on SMP systems.
#Configure IRQBALANCE_ARGS to pass arguments to the daemon
IRQBALANCE_ARGS="--hintpolicy=subset"
"""


def _put(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + ("\n" if text and not text.endswith("\n") else ""))
    os.chmod(path, mode)


def _link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def queue_files(root: Path, netdir: str, kind: str, queue: int) -> None:
    """A queue directory with the kernel's defaults (8 CPUs: masks print as two hex digits)."""
    base = f"{netdir}/queues/{kind}-{queue}"
    if kind == "rx":
        _put(root, f"{base}/rps_cpus", "00")
        _put(root, f"{base}/rps_flow_cnt", "0")
    else:
        _put(root, f"{base}/xps_cpus", "00")
        _put(root, f"{base}/xps_rxqs", "00")
        _put(root, f"{base}/tx_maxrate", "0")
        _put(root, f"{base}/traffic_class", "0", 0o444)


def _netdev(root: Path, name: str, netdir: str, queues: int) -> None:
    _link(root, f"sys/class/net/{name}", f"../../{netdir}")
    _put(root, f"sys/{netdir}/napi_defer_hard_irqs", "0")
    _put(root, f"sys/{netdir}/gro_flush_timeout", "0")
    _put(root, f"sys/{netdir}/threaded", "0")
    _put(root, f"sys/{netdir}/ifindex", str(len(os.listdir(root / "sys/class/net"))))
    for q in range(queues):
        queue_files(root, f"sys/{netdir}", "rx", q)
        queue_files(root, f"sys/{netdir}", "tx", q)


def _cpus(root: Path, pdpe1gb: bool) -> None:
    _put(root, "sys/devices/system/cpu/online", f"0-{CPUS - 1}")
    for cpu in range(CPUS):
        _put(root, f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list", SIBLINGS[cpu])
        policy = f"sys/devices/system/cpu/cpufreq/policy{cpu}"
        _put(root, f"{policy}/scaling_governor", "schedutil")
        _put(root, f"{policy}/scaling_available_governors", "performance schedutil powersave")
        _put(root, f"{policy}/affected_cpus", str(cpu), 0o444)
        _link(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq", f"../cpufreq/policy{cpu}")
    for node, cpulist in NODES.items():
        _put(root, f"sys/devices/system/node/node{node}/cpulist", cpulist, 0o444)
        for size in ("2048kB", "1048576kB"):
            _put(root, f"sys/devices/system/node/node{node}/hugepages/hugepages-{size}/nr_hugepages", "0")
    for size in ("2048kB", "1048576kB"):
        _put(root, f"sys/kernel/mm/hugepages/hugepages-{size}/nr_hugepages", "0")
    flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht"
    flags += " syscall nx" + (" pdpe1gb" if pdpe1gb else "") + " rdtscp lm constant_tsc avx2"
    _put(root, "proc/cpuinfo", "".join(f"processor\t: {c}\nflags\t\t: {flags}\n\n" for c in range(CPUS)), 0o444)


def _interrupts(root: Path) -> None:
    lines = ["     " + "".join(f"      CPU{c}" for c in range(CPUS))]
    vectors: list[tuple[int, str, str]] = [(0, "IO-APIC   2-edge", "timer")]
    for pci, _node, first, pattern, admin in NICS.values():
        bdf = pci.rsplit("/", 1)[-1]
        vectors.append((first, f"IR-PCI-MSIX-{bdf}   0-edge", admin))
        vectors += [(first + 1 + q, f"IR-PCI-MSIX-{bdf}   {q + 1}-edge", pattern.format(q=q)) for q in range(QUEUES)]
    vectors += [(40, "PCI-MSIX-0000:00:03.0   0-edge", "virtio2-config"),
                (41, "PCI-MSIX-0000:00:03.0   1-edge", "virtio2-input.0"),
                (42, "PCI-MSIX-0000:00:03.0   2-edge", "virtio2-output.0")]
    for number, chip, name in sorted(vectors):
        lines.append(f"{number:4d}: " + "".join(f"{7:10d}" for _ in range(CPUS)) + f"  {chip}      {name}")
        _put(root, f"proc/irq/{number}/smp_affinity_list", f"0-{CPUS - 1}")
        _put(root, f"proc/irq/{number}/smp_affinity", "ff")
    lines += ["NMI:" + "".join(f"{0:10d}" for _ in range(CPUS)) + "   Non-maskable interrupts"]
    _put(root, "proc/interrupts", "\n".join(lines), 0o444)


def build(root: Path, pdpe1gb: bool = True) -> Path:
    """Create the tree under ``root`` (an empty directory) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sys/class/net").mkdir(parents=True)
    _cpus(root, pdpe1gb)
    _interrupts(root)
    for name, (pci, node, first, _pattern, _admin) in NICS.items():
        _put(root, f"sys/{pci}/numa_node", str(node), 0o444)
        for v in range(first, first + 1 + QUEUES):
            _put(root, f"sys/{pci}/msi_irqs/{v}", "msix", 0o444)
        _netdev(root, name, f"{pci}/net/{name}", QUEUES)
        _link(root, f"sys/{pci}/net/{name}/device", "../../../" + pci.rsplit("/", 1)[-1])
    # eth0: a virtio NIC; the vectors belong to the PCI function, the netdev hangs off virtio2.
    _put(root, f"sys/{MGMT}/numa_node", "0", 0o444)
    for v in (40, 41, 42):
        _put(root, f"sys/{MGMT}/msi_irqs/{v}", "msix", 0o444)
    _link(root, f"sys/{MGMT}/virtio2/subsystem", "../../../../bus/virtio")
    _netdev(root, "eth0", f"{MGMT}/virtio2/net/eth0", 1)
    _link(root, f"sys/{MGMT}/virtio2/net/eth0/device", "../../../virtio2")
    _netdev(root, "veth0", "devices/virtual/net/veth0", 4)
    _netdev(root, "lo", "devices/virtual/net/lo", 1)
    for name, value in SYSCTLS.items():
        _put(root, f"proc/sys/net/core/{name}", value)
    _put(root, "proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/nvme0n1p2 ro quiet", 0o444)
    _put(root, "proc/net/route",
         "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
         "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
         "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", 0o444)
    _put(root, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never")
    _put(root, "sys/kernel/mm/transparent_hugepage/defrag", "always defer defer+madvise [madvise] never")
    _put(root, "etc/default/irqbalance", IRQBALANCE_DEFAULTS)
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def snapshot(root: Path) -> dict[str, object]:
    """Every file's bytes, every link's target and every directory under ``root``: equal means byte for byte."""
    seen: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir",)
            else:
                seen[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
    return seen
