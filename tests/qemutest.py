"""A QEMU guest for the image boot test: the appliance image booted under software emulation (TCG) inside a
network namespace the test made, with a management NIC (QEMU user networking, one port forwarded to the
guest's metrics endpoint) and the feed NIC on a multi-queue tap in that namespace; commands run in the guest
through qemu-guest-agent on a virtio serial port (no password, no SSH).

Never KVM: this machine's /dev/kvm cannot run a stock guest kernel (../shared/notes/platform-facts.md)."""
from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FEED_TAP = "tapfeed"
FEED_QUEUES = 4
FEED_PCI_SLOT = 5              # where provisioning/image/10-feed0.link expects the feed NIC (feed0)
MGMT_PCI_SLOT = 4
GUEST_METRICS_PORT = 9108


class AgentError(RuntimeError):
    pass


class Guest:
    """``with Guest(image, ns, workdir) as g:`` boots it (``-snapshot``: the image is never written) and powers
    it off (killed if it does not stop) on every exit path."""

    def __init__(self, image: Path, ns: str, workdir: Path, memory_mb: int = 4096, cpus: int = 2,
                 metrics_port: int = 19108):
        self.image, self.ns, self.workdir = image, ns, workdir
        self.memory_mb, self.cpus, self.metrics_port = memory_mb, cpus, metrics_port
        self.agent_path = workdir / "qga.sock"
        self.console = workdir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.buf = b""

    def argv(self) -> list[str]:
        vars_copy = self.workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        return ["ip", "netns", "exec", self.ns, "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
                "-smp", str(self.cpus), "-m", str(self.memory_mb), "-display", "none", "-no-reboot",
                "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={vars_copy}",
                "-drive", f"file={self.image},if=virtio,format=qcow2,snapshot=on",
                "-netdev", f"user,id=mgmt,hostfwd=tcp:127.0.0.1:{self.metrics_port}-:{GUEST_METRICS_PORT}",
                "-device", f"virtio-net-pci,netdev=mgmt,addr={MGMT_PCI_SLOT}",
                "-netdev", f"tap,id=feed,ifname={FEED_TAP},script=no,downscript=no,queues={FEED_QUEUES},vhost=off",
                "-device", f"virtio-net-pci,netdev=feed,mq=on,vectors={2 * FEED_QUEUES + 2},addr={FEED_PCI_SLOT},"
                           "mac=52:54:00:fe:ed:01",
                "-chardev", f"socket,id=qga,path={self.agent_path},server=on,wait=off",
                "-device", "virtio-serial", "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
                "-serial", f"file:{self.console}"]

    def __enter__(self) -> "Guest":
        subprocess.run(["ip", "-n", self.ns, "tuntap", "add", "dev", FEED_TAP, "mode", "tap", "multi_queue"],
                       check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", FEED_TAP, "up"], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the agent ------------------------------------------------------------------------------------------
    def wait_agent(self, timeout: float) -> float:
        """Until the guest agent answers (the guest booted as far as udev and the agent); returns the seconds."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AgentError(f"QEMU exited ({self.proc.returncode}): {self.proc.stdout.read().decode()[-2000:]}"
                                 f"\nconsole: {self.console_tail()}")
            try:
                self._connect()
                self.call("guest-sync", {"id": 4242}, timeout=5)
                return time.monotonic() - started
            except (OSError, AgentError, TimeoutError):
                self._disconnect()
                time.sleep(2)
        raise AgentError(f"the guest agent did not answer within {timeout:g} s; console: {self.console_tail()}")

    def _connect(self) -> None:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(self.agent_path))
            self.buf = b""

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def call(self, command: str, arguments: dict | None = None, timeout: float = 30):
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.sock.settimeout(timeout)
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while b"\n" not in self.buf:
            data = self.sock.recv(1 << 20)
            if not data:
                raise AgentError(f"the guest agent hung up on {command}")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        answer = json.loads(line.lstrip(b"\xff"))
        if "error" in answer:
            raise AgentError(f"{command}: {answer['error']}")
        return answer.get("return")

    def run(self, *argv: str, timeout: float = 300) -> tuple[int, str, str]:
        """Run argv in the guest (as root, by the agent); (exit code, stdout, stderr)."""
        pid = self.call("guest-exec", {"path": argv[0], "arg": list(argv[1:]), "capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.call("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                return st.get("exitcode", -1), out, err
            time.sleep(0.5)
        raise AgentError(f"{' '.join(argv)} did not finish within {timeout:g} s in the guest")

    def sh(self, script: str, timeout: float = 300) -> tuple[int, str, str]:
        return self.run("/bin/sh", "-c", script, timeout=timeout)

    def read(self, path: str) -> bytes:
        code, out, err = self.run("/usr/bin/base64", "-w0", path, timeout=120)
        if code != 0:
            raise AgentError(f"cannot read {path} in the guest: {err.strip()}")
        return base64.b64decode(out)

    def console_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console output)"

    # -- the end --------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                if self.sock is not None:
                    self.sock.settimeout(5)
                    self.sock.sendall(b'{"execute": "guest-shutdown"}\n')   # no answer comes for this one
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
        self._disconnect()
        subprocess.run(["ip", "-n", self.ns, "link", "del", FEED_TAP], capture_output=True)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def http_get(ns: str, url: str, timeout: float = 20) -> tuple[int, str]:
    """GET url from inside the namespace (where QEMU's forwarded port listens): (status, body)."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=15); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
    done = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code, url], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise OSError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no answer")
    status, _, body = done.stdout.partition("\n")
    return int(status), body


def source_hash(repo: Path) -> str:
    """provisioning/bootstrap.sh's hash of the sources that go into the package (what image.json records)."""
    script = ("find pyproject.toml appliance provisioning xdp -type f ! -path '*/__pycache__/*' ! -name '*.pyc' "
              "! -path 'xdp/build/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16")
    return subprocess.run(["sh", "-c", script], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

