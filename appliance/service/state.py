"""What ``appliance serve`` keeps across its own lifetimes, in ``[service] state_directory``/serve-state.json.

``starts``: every start of the service; ``restarts``: the starts that followed a run that did not end cleanly
(killed, crashed, the machine went down) -- the run marks itself ``running`` when it starts and not running
when it stops on request, so a start that finds ``running`` still set follows an unclean end.  A systemd
``Restart=on-failure`` after a SIGKILL therefore shows as ``appliance_restarts_total`` going up by one.  The
file is written under a temporary name and renamed, so a reader (or the next start) never sees half of it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from appliance.errors import RunFailed

NAME = "serve-state.json"


class ServeState:
    def __init__(self, directory: str):
        self.path = Path(directory) / NAME
        self.data = {"starts": 0, "restarts": 0, "running": False, "sessions_completed": 0}

    def start(self) -> bool:
        """Read the file (if any), count this start; True when the last run did not stop cleanly."""
        try:
            self.data.update(json.loads(self.path.read_text()))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:
            raise RunFailed(f"cannot read the service state {self.path}: {err} (move it away to start afresh)") \
                from None
        unclean = bool(self.data["running"])
        self.data["starts"] += 1
        self.data["restarts"] += int(unclean)
        self.data["running"] = True
        self.save()
        return unclean

    def session_completed(self) -> None:
        self.data["sessions_completed"] += 1
        self.save()

    def stop(self) -> None:
        self.data["running"] = False
        self.save()

    @property
    def restarts(self) -> int:
        return int(self.data["restarts"])

    def save(self) -> None:
        tmp = self.path.with_name(f".{NAME}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.data, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as err:
            raise RunFailed(f"cannot write the service state {self.path}: {err.strerror or err}") from None
