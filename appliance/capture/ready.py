"""Readiness and the fan-out workers' start line: when a capture may be sent to, and when workers may take frames.

``--ready-file PATH``: once the rings are up (and, for fan-out workers, every worker has joined), the capture
writes PATH -- a small JSON object, written to a temporary name and renamed, so a reader never sees half of
it -- and removes it when the capture ends.  A script waits for the file instead of parsing log lines.

``FanoutLine``: ``capture --workers N`` starts N processes in one PACKET_FANOUT group, and the group's flow-hash
-> member mapping depends on how many members it has: a worker that took frames while another was still joining
would keep a line's first frames and lose the rest to the newcomer, and one that left while another still took
frames would hand its lines' last frames over.  So the workers share a start line and an end line, kept as files
in a directory the parent made:

* start: each worker joins holding its place (a filter that keeps nothing) and creates ``joined-PID``; the
  parent creates ``go`` once every worker has joined, and only then does each take the feed;
* end: a worker that stops goes back to holding, creates ``held-PID`` and stays in the group until every worker
  holds (or has died, or ``END_WAIT`` passed), then leaves;
* ``ended``: the first worker to see every session end creates it; the others then stop once their own lines
  have been quiet for ``--linger`` (a worker whose lines all hashed elsewhere sees no end of session itself);
* ``fed``: the first worker to receive a feed frame creates it, closing every worker's wrong-feed watcher.

Files, not pipes: they need no descriptor plumbing through ``ip netns exec`` and outlive a worker that dies.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from appliance.files import pid_alive

POLL = 0.02                   # seconds between looks at the start and end lines' files
END_WAIT = 10.0               # seconds a stopped worker stays in the group for the others to stop taking frames


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


class FanoutLine:
    """A worker's side of the start and end lines kept in ``directory``."""

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

    def ended(self) -> None:
        (self.dir / "ended").touch()

    def peer_ended(self) -> bool:
        return (self.dir / "ended").exists()

    def held(self, seconds: float = END_WAIT) -> bool:
        """Say this worker takes no more frames; wait until every worker that joined says so or is gone."""
        (self.dir / f"held-{os.getpid()}").touch()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pids = [int(p.name.split("-", 1)[1]) for p in self.dir.glob("joined-*")]
            if all((self.dir / f"held-{pid}").exists() or not pid_alive(pid) for pid in pids):
                return True
            time.sleep(POLL)
        return False


def all_joined(directory: Path, pids: list[int]) -> bool:
    return all((directory / f"joined-{pid}").exists() for pid in pids)


def open_the_gate(directory: Path) -> None:
    (directory / "go").touch()
