"""The appliance image (``make image``: provisioning/image/build.sh) booted in a QEMU guest (issue 12's boot test).

The guest boots the image under software emulation (UEFI firmware, systemd-boot, Debian's kernel, systemd) with a
4-queue virtio-net feed NIC on a multi-queue tap inside a namespace the test creates; the test then, through the
guest agent and the forwarded metrics port:

* systemd started ``appliance serve`` by itself (the unit, as the image's ``appliance`` user with its ambient
  capabilities, Type=notify: active means READY came) and /healthz answers;
* ``appliance tune apply`` on feed0 (the service stopped: virtio_net refuses a channel change under XDP) sets the
  channels and per-queue IRQ affinity, ``verify`` agrees, the service starts again on the new queues;
* pcaps/sample.pcap sent into the tap: the session's tables, read back from the guest, equal offline replay of
  the same frames byte for byte, and the metrics count its messages;
* ``appliance tune revert`` puts channels and every IRQ's affinity back exactly as they were.

The image is built first, as ``make image`` builds it (provisioning/image/build.sh into build/image, or
``APPLIANCE_IMAGE_DIR``): about 6 minutes from a fresh clone (a Debian download, then the kernels compiled for
the guest's CPU model), about 4 minutes after a change to the sources, seconds when only the tests changed.
Its output goes to ``build.log`` beside the image; a failed build fails the test with its last lines.  Skipped,
saying why, without root, QEMU, OVMF or the build's tools (``sh provisioning/setup.sh test`` installs them all),
or when a build that had to download Debian's packages failed with the mirror out of reach.
Guest timings are functional only: emulation is about 20x slower than this host, so no performance figure comes
from here.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from qemutest import FEED_TAP, OVMF_CODE, OVMF_VARS, Guest, http_get, source_hash

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.qemu, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
IMAGE_DIR = Path(os.environ.get("APPLIANCE_IMAGE_DIR", REPO / "build" / "image"))
IMAGE = IMAGE_DIR / "appliance.qcow2"
SAMPLE = REPO / "pcaps" / "sample.pcap"
APPLIANCE = "/opt/appliance/bin/appliance"
TIMINGS: dict[str, float] = {}
BUILD_TIMEOUT = 1800           # a build from nothing takes about 6 minutes here
MIRROR = os.environ.get("APPLIANCE_MIRROR", "http://deb.debian.org/debian") + "/dists/bookworm/Release"
# what build.sh runs (it refuses without them; here the test skips, saying which Debian package to install)
BUILD_TOOLS = {"mmdebstrap": "mmdebstrap", "mke2fs": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
               "sfdisk": "fdisk", "qemu-img": "qemu-utils"}


def _skip_reason() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "needs qemu-system-x86_64 (apt-get install qemu-system-x86)"
    if not (OVMF_CODE.exists() and OVMF_VARS.exists()):
        return "needs UEFI firmware for the guest (apt-get install ovmf)"
    missing = sorted({deb for tool, deb in BUILD_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        return (f"building the image needs {', '.join(missing)} "
                "(apt-get install them, or run 'sh provisioning/setup.sh test')")
    return None


def _unreachable(url: str) -> str | None:
    """Why ``url`` cannot be reached, or None: an HTTP answer, even an error, means it can."""
    try:
        urllib.request.urlopen(url, timeout=10).close()
    except urllib.error.HTTPError:
        return None
    except OSError as err:
        return str(err)
    return None


def _stop_group(leader: subprocess.Popen) -> None:
    """SIGTERM to the build's process group (bootstrap's trap unmounts), then wait for every member to go (the
    leader reaped here: a zombie still counts); SIGKILL after a minute."""
    for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        deadline = time.monotonic() + grace
        try:
            os.killpg(leader.pid, sig)
            while time.monotonic() < deadline:
                leader.poll()
                os.killpg(leader.pid, 0)
                time.sleep(0.5)
        except ProcessLookupError:
            return


@pytest.fixture(scope="module")
def image() -> Path:
    """The image of this checkout's sources, built (or found up to date) by provisioning/image/build.sh."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    log = IMAGE_DIR / "build.log"
    with log.open("w") as out:
        # its own process group: on a timeout (or an interrupt) the whole build gets SIGTERM, so bootstrap's
        # trap unmounts what it bind-mounted into the root before it goes
        build = subprocess.Popen(["sh", str(REPO / "provisioning" / "image" / "build.sh"), str(IMAGE_DIR)],
                                 stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        timed_out = False
        try:
            build.wait(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if build.poll() is None:
                _stop_group(build)
                build.wait()
    said = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
    if timed_out:
        pytest.fail(f"make image did not finish in {BUILD_TIMEOUT} s (stopped); its last lines:\n{said}")
    if build.returncode != 0 and "mmdebstrap failed" in said:
        down = _unreachable(MIRROR)           # a build from nothing downloads Debian's packages: no way out, skip
        if down:
            pytest.skip(f"building the image needs {MIRROR}, which is not reachable ({down})")
    assert build.returncode == 0, "make image failed:\n" + said
    print("\n" + said[-1])
    made = json.loads((IMAGE_DIR / "image.json").read_text())
    assert made["source_hash"] == source_hash(REPO), (made, "the image is not of this checkout's sources")
    return IMAGE


def _ns(name: str) -> str:
    subprocess.run(["ip", "netns", "add", name], check=True)
    return name


def _tables_done(guest: Guest) -> str | None:
    code, out, _ = guest.sh("ls -d /var/lib/appliance/tables/*-TEST000001 2>/dev/null; true", timeout=60)
    done = [d for d in out.split() if d]
    for d in done:
        code, _, _ = guest.sh(f"test -f {d}/summary.json", timeout=60)
        if code == 0:
            return d
    return None


def _irq_affinity(guest: Guest) -> dict[str, str]:
    """feed0's queue interrupts (virtioN-input.K / output.K) and their smp_affinity_list."""
    code, out, err = guest.sh(
        "dev=$(basename $(readlink /sys/class/net/feed0/device)); "
        "grep \"$dev-\" /proc/interrupts | while read irq rest; do irq=${irq%:}; "
        "echo \"${rest##* } $(cat /proc/irq/$irq/smp_affinity_list)\"; done", timeout=60)
    assert code == 0, err
    return dict(line.split() for line in out.splitlines() if line.strip())


def _channels(guest: Guest) -> int:
    code, out, err = guest.run("/usr/sbin/ethtool", "-l", "feed0", timeout=60)
    assert code == 0, err
    current = out.split("Current hardware settings:")[1]
    return int(re.search(r"Combined:\s+(\d+)", current).group(1))


def _wait_active(guest: Guest, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        code, out, _ = guest.run("/bin/systemctl", "is-active", "appliance", timeout=60)
        state = out.strip()
        if state == "active":
            return time.monotonic() - started
        if state == "failed":
            _, log, _ = guest.sh("journalctl -u appliance --no-pager | tail -n 30", timeout=60)
            raise AssertionError("appliance.service failed:\n" + log)
        time.sleep(3)
    _, log, _ = guest.sh("systemctl status appliance --no-pager | tail -n 30", timeout=60)
    raise AssertionError(f"appliance.service not active within {timeout:g} s:\n{log}")


def test_the_image_boots_serves_tunes_and_captures_the_sample(image, tmp_path):
    replay = subprocess.run([str(REPO / ".venv" / "bin" / "appliance"), "replay", str(SAMPLE), "--out",
                             str(tmp_path / "replay"), "-q"], capture_output=True, text=True)
    assert replay.returncode == 0, replay.stderr
    expected = json.loads((tmp_path / "replay" / "summary.json").read_text())
    ns = _ns(f"appl-img-{os.getpid()}")
    try:
        with Guest(image, ns, tmp_path) as guest:
            TIMINGS["boot to agent"] = guest.wait_agent(timeout=420)
            # systemd started the service at boot: Type=notify, so active means serve said READY
            TIMINGS["boot to service ready"] = TIMINGS["boot to agent"] + _wait_active(guest, timeout=600)
            code, out, _ = guest.run("/bin/systemctl", "show", "appliance", "-p", "User", "-p", "NRestarts",
                                     timeout=60)
            assert "User=appliance" in out and "NRestarts=0" in out, out
            status, body = http_get(ns, f"http://127.0.0.1:{guest.metrics_port}/healthz")
            assert status == 200, body

            # tune: the service stopped (virtio_net refuses a channel change under an XDP program)
            assert guest.run("/bin/systemctl", "stop", "appliance", timeout=120)[0] == 0
            before_channels, before_irqs = _channels(guest), _irq_affinity(guest)
            code, out, err = guest.run(APPLIANCE, "tune", "apply", "--iface", "feed0", "--json", timeout=300)
            assert code == 0, err + out
            code, out, err = guest.run(APPLIANCE, "tune", "verify", timeout=300)
            assert code == 0, err + out
            tuned_channels, tuned_irqs = _channels(guest), _irq_affinity(guest)
            assert (tuned_channels, tuned_irqs) != (before_channels, before_irqs), "tune changed nothing"
            assert guest.run("/bin/systemctl", "start", "appliance", timeout=600)[0] == 0
            _wait_active(guest, timeout=600)

            # the sample into the feed NIC; the session filed in the guest equals replay's tables
            sent = subprocess.run(["ip", "netns", "exec", ns, str(REPO / ".venv" / "bin" / "appliance"), "replay",
                                   str(SAMPLE), "--send", FEED_TAP, "--pps", "2000"], capture_output=True, text=True)
            assert sent.returncode == 0, sent.stderr
            deadline, filed = time.monotonic() + 300, None
            while time.monotonic() < deadline and filed is None:
                filed = _tables_done(guest)
                time.sleep(3)
            assert filed, "no session was filed: " + guest.sh("journalctl -u appliance --no-pager | tail -n 30")[1]
            summary = json.loads(guest.read(f"{filed}/summary.json"))
            assert summary["messages"] == expected["messages"], (summary["messages"], expected["messages"])
            for table in ("bbo.csv", "trades.csv", "vwap.csv", "broken.csv"):
                assert guest.read(f"{filed}/{table}") == (tmp_path / "replay" / table).read_bytes(), table
            status, metrics = http_get(ns, f"http://127.0.0.1:{guest.metrics_port}/metrics")
            assert status == 200
            counted = sum(float(line.split()[-1]) for line in metrics.splitlines()
                          if line.startswith("appliance_messages_total"))
            assert counted == expected["messages"], counted

            # revert: exactly as before
            assert guest.run("/bin/systemctl", "stop", "appliance", timeout=120)[0] == 0
            code, out, err = guest.run(APPLIANCE, "tune", "revert", timeout=300)
            assert code == 0, err + out
            assert (_channels(guest), _irq_affinity(guest)) == (before_channels, before_irqs)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        print("\nimage boot test: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))
