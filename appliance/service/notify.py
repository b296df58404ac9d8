"""systemd's notify protocol, without a dependency: what a ``Type=notify`` service tells its manager.

The protocol (sd_notify(3)): one datagram per message to the AF_UNIX socket named by ``$NOTIFY_SOCKET``, a
newline-separated list of ``KEY=VALUE`` (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``,
``RELOADING=1`` with ``MONOTONIC_USEC``, the CLOCK_MONOTONIC time of the reload, for ``Type=notify-reload``).
A name starting with ``@`` is in the abstract namespace (a leading NUL byte).  Without ``$NOTIFY_SOCKET``
(started by hand, not by systemd) every call does nothing.

The watchdog (sd_watchdog_enabled(3)): ``$WATCHDOG_USEC`` is the interval the manager allows between two
``WATCHDOG=1``; ``$WATCHDOG_PID``, when set, names the one process meant (a child that inherited the
environment must not ping).  systemd's advice is to ping at half the interval.
"""
from __future__ import annotations

import os
import socket
import time


class Notifier:
    """``Notifier()`` reads the environment once; ``ready()``, ``status(text)``, ``watchdog()``, ``stopping()``,
    ``reloading()`` send; each returns whether a datagram went out (False: no socket to tell)."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = ("\0" + path[1:]) if path.startswith("@") else path
        self.watchdog_period = watchdog_period(env)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str | int) -> bool:
        """One message of ``KEY=VALUE`` lines (keys as given, upper case by convention)."""
        if not self.address:
            return False
        if any("\n" in str(v) for v in fields.values()):
            raise ValueError("a notify value cannot hold a newline")
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(text.encode(), self.address)
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        """Tell the manager a reload starts (``READY=1`` again when it is done)."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)


def watchdog_period(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None: no watchdog for this process
    (unset, not a positive number, or ``$WATCHDOG_PID`` names another process)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1e6
