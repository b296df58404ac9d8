"""Readiness and the fan-out workers' start line: when a capture may be sent to, and when workers may take frames.

``--ready-file PATH``: once the rings are up (and, for fan-out workers, every worker has joined), the capture
writes PATH -- a small JSON object, written to a temporary name and renamed, so a reader never sees half of
it -- and removes it when the capture ends.  A script waits for the file instead of parsing log lines.

``FanoutStart``: ``capture --workers N`` starts N processes; a worker that took frames while another was still
joining the PACKET_FANOUT group would see a line's first frames and lose the rest to the newcomer (the group's
flow-hash -> member mapping depends on the member count).  Each worker therefore joins holding its place (a
filter that keeps nothing), says so by creating ``joined-PID`` in a directory the parent made, and waits for
``go``, which the parent creates once every worker has joined; only then does each worker take the feed.  The
first worker to receive a feed frame creates ``fed``, which closes every worker's wrong-feed watcher.
Files, not pipes: they need no descriptor plumbing through ``ip netns exec`` and survive a worker's death.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

POLL = 0.02                   # seconds between looks at the start line's files


def write_ready(path: str, info: dict) -> None:
    """Write the ready file whole or not at all (rename is atomic within a directory)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, target)


def remove_ready(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class FanoutStart:
    """A worker's side of the start line kept in ``directory``."""

    def __init__(self, directory: str):
        self.dir = Path(directory)
        self._fed = False

    def joined(self) -> None:
        (self.dir / f"joined-{os.getpid()}").touch()

    def wait_for_go(self, stopping: dict) -> bool:
        """Block until every worker has joined (True), or a stop signal came first (False)."""
        go = self.dir / "go"
        while stopping["flag"] is None:
            if go.exists():
                return True
            time.sleep(POLL)
        return False

    def fed(self) -> None:
        """This worker has its first feed frame (once)."""
        if not self._fed:
            self._fed = True
            (self.dir / "fed").touch()

    def peer_fed(self) -> bool:
        return self._fed or (self.dir / "fed").exists()


def all_joined(directory: Path, pids: list[int]) -> bool:
    return all((directory / f"joined-{pid}").exists() for pid in pids)


def open_the_gate(directory: Path) -> None:
    (directory / "go").touch()
