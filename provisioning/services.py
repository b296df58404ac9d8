"""Starting and stopping the daemons tuning interferes with (irqbalance), with or without systemd.

Under systemd the unit is stopped and started with ``systemctl``.  Without it (containers, this Firecracker
VM, minimal images) the daemon is found with psutil, its command line is recorded, it is terminated, and a
revert starts the same command line again.  The recorded state is a small dict so it can sit in the state
file: ``{"active": bool, "manager": "systemd" | "process", "cmdline": [...]}``.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Protocol

from provisioning.hostfs import HostFS


class ServiceControl(Protocol):
    def status(self, name: str) -> dict: ...
    def set_status(self, name: str, wanted: dict) -> None: ...
    def restart_if_active(self, name: str) -> None: ...
    def daemon_reload(self) -> bool: ...


class ServiceError(OSError):
    """A service manager refused to start or stop a service."""


class HostServices:
    """The real services of the host (or of the root given to :class:`HostFS`, for systemd detection)."""

    def __init__(self, fs: HostFS, stop_timeout: float = 5.0):
        self.fs = fs
        self.stop_timeout = stop_timeout

    @property
    def systemd(self) -> bool:
        # sd_booted(3): systemd is PID 1 exactly when this directory exists.
        return self.fs.is_dir("/run/systemd/system") and shutil.which("systemctl") is not None

    def _systemctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True)

    def _processes(self, name: str):
        import psutil

        found = []
        for proc in psutil.process_iter(["name", "cmdline", "status"]):
            # A zombie has exited; only its parent has not collected it yet.
            if proc.info["name"] == name and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        return found

    def status(self, name: str) -> dict:
        if self.systemd:
            active = self._systemctl("is-active", "--quiet", f"{name}.service").returncode == 0
            return {"active": active, "manager": "systemd"}
        procs = self._processes(name)
        if not procs:
            return {"active": False, "manager": "process"}
        return {"active": True, "manager": "process", "cmdline": list(procs[0].info["cmdline"] or [name])}

    def set_status(self, name: str, wanted: dict) -> None:
        if self.fs.dry_run:
            return
        if self.systemd:
            verb = "start" if wanted["active"] else "stop"
            done = self._systemctl(verb, f"{name}.service")
            if done.returncode != 0:
                raise ServiceError(f"systemctl {verb} {name}: {done.stderr.strip()}")
            return
        if wanted["active"]:
            self._spawn(name, wanted.get("cmdline") or [name])
        else:
            self._terminate(name)

    def _terminate(self, name: str) -> None:
        import psutil

        procs = self._processes(name)
        for proc in procs:
            proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=self.stop_timeout)
        if alive:
            raise ServiceError(f"{name} (pid {alive[0].pid}) did not exit within {self.stop_timeout:g} s")

    def _spawn(self, name: str, cmdline: list[str]) -> None:
        if self._processes(name):
            return
        # The recorded command line is what was running; irqbalance daemonizes itself unless it was
        # started with --foreground, in which case the new session keeps it alive after we exit.
        subprocess.Popen(cmdline, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def restart_if_active(self, name: str) -> None:
        status = self.status(name)
        if not status["active"] or self.fs.dry_run:
            return
        if self.systemd:
            done = self._systemctl("restart", f"{name}.service")
            if done.returncode != 0:
                raise ServiceError(f"systemctl restart {name}: {done.stderr.strip()}")
        else:
            self._terminate(name)
            self._spawn(name, status["cmdline"])

    def daemon_reload(self) -> bool:
        """Make systemd read changed unit files; ``False`` when systemd is not running here."""
        if not self.systemd or self.fs.dry_run:
            return False
        done = self._systemctl("daemon-reload")
        if done.returncode != 0:
            raise ServiceError(f"systemctl daemon-reload: {done.stderr.strip()}")
        return True
