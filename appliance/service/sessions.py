"""One capture per MoldUDP64 session under ``appliance serve``: where its tables go and what it leaves.

The session's name is known only once its first packet arrived, its date (``session_date`` of summary.json: the
capture time of the first feed frame, US Eastern) only from the decoder.  So a capture writes into a staging
directory, ``<tables>/incoming-<UTC start>-<pid>``, and when it has ended and its summary.json is written there,
the directory is renamed to ``<tables>/<YYYY-MM-DD>-<SESSION>`` -- a rename within one directory, so a reader
sees either no session directory or a complete one.  A name already taken (the service restarted within a
session and captured the rest of it) gets ``.2``, ``.3``... appended.  A capture that saw no MoldUDP64 session
at all (stopped while waiting for the next one) leaves nothing: its staging directory holds only table headers
and is removed.

A staging directory found at start-up whose writer is gone (its pid is not running, or is now a process that
started after the directory was made) belongs to a run that was killed or crashed mid-session: it is renamed
``<tables>/incomplete-<UTC start>-<pid>`` with an ``incomplete.json`` saying so (``mark_incomplete``).  Never a
``<date>-<SESSION>`` name: it has no summary.json, and its tables stop where the dead run's output process
stopped (every row the capture had published: the output process drains them once its life pipe hangs up).
It is never mistaken for a complete session, and no longer looks like a directory something is writing.  The
recording of that run holds every frame it received; ``appliance replay`` of it rebuilds the session.

Session names come from the wire: characters outside ``[A-Za-z0-9_-]`` become ``_`` in the directory name (the
summary keeps the real name).  A capture that saw more than one session (a feed that changed session without an
end-of-session packet) is named after the first, and the log says so.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
from pathlib import Path

STAGING_PREFIX = "incoming-"
INCOMPLETE_PREFIX = "incomplete-"
INCOMPLETE_NOTE = "incomplete.json"
_STAGING = re.compile(r"incoming-(\d{8}T\d{6}\.\d{6}Z)-(\d+)")
UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def staging_dir(base: str) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = Path(base) / f"{STAGING_PREFIX}{stamp}-{os.getpid()}"
    path.mkdir(parents=True)
    return path


def leftovers(base: str) -> list[Path]:
    """Staging directories of runs that did not finish: not this process's, nor a live process's."""
    try:
        found = sorted(p for p in Path(base).iterdir() if p.is_dir() and p.name.startswith(STAGING_PREFIX))
    except FileNotFoundError:
        return []
    return [p for p in found if not writer_alive(p)]


def writer_alive(staging: Path) -> bool:
    """True while the process named in a staging directory's name may still be writing it: a running process
    (this one included) that started before the directory was made.  A pid reused by a later process is not it
    -- nor this process when it has the pid of the run it follows (PID 1 in a container, every time).  The
    second of slack: psutil's start times count from the boot time, which the kernel gives in whole seconds."""
    import psutil

    m = _STAGING.fullmatch(staging.name)
    if m is None:
        return False                  # not a name we make: nobody of ours writes it
    pid = int(m.group(2))
    made = datetime.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True                   # there, but not ours to read: leave its directory alone
    return started <= made.timestamp() + 1.0


def mark_incomplete(staging: Path, why: str) -> Path:
    """File a dead run's staging directory as ``incomplete-...`` with a note; the new path (OSError for the
    caller to word)."""
    from appliance.replay.output import write_json

    m = _STAGING.fullmatch(staging.name)
    stem = staging.name[len(STAGING_PREFIX):] if m else staging.name
    write_json(staging / INCOMPLETE_NOTE, {
        "complete": False, "why": why, "staging": staging.name, "pid": int(m.group(2)) if m else None,
        "found": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "files": {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}})
    target = staging.parent / f"{INCOMPLETE_PREFIX}{stem}"
    n = 1
    while target.exists():
        n += 1
        target = staging.parent / f"{INCOMPLETE_PREFIX}{stem}.{n}"
    os.rename(staging, target)
    return target


def session_name(summary: dict) -> str | None:
    sessions = summary.get("sessions") or []
    return sessions[0]["session"] if sessions else None


def final_name(summary: dict) -> str | None:
    """``YYYY-MM-DD-SESSION`` for a summary, or None when the capture saw no session."""
    name = session_name(summary)
    if name is None:
        return None
    date = (summary.get("session_date") or {}).get("date") or "undated"
    return f"{date}-{UNSAFE.sub('_', name.strip()) or '_'}"


def settle(staging: Path, summary: dict) -> Path | None:
    """Rename the finished staging directory to its session's name (or remove it: no session); the new path."""
    name = final_name(summary)
    if name is None:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    target = staging.parent / name
    n = 1
    while True:
        try:
            os.rename(staging, target)      # refuses a non-empty existing directory (ENOTEMPTY/EEXIST)
            return target
        except OSError as err:
            if not target.exists():
                raise
            n += 1
            target = staging.parent / f"{name}.{n}"
            if n > 1000:
                raise err


def directory_bytes(path: Path) -> int:
    """Bytes of the files in ``path`` (one level: the table files)."""
    total = 0
    try:
        for entry in os.scandir(path):
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return total


def summary_of(capture) -> dict:
    """The summary.json of a finished capture, as ``appliance capture`` writes it."""
    from appliance.replay import summary as report_mod

    options = capture.options
    feeds = ", ".join(f"{ipaddress.IPv4Address(g)}:{p}" for g, p in options.feeds)
    summary = report_mod.build(capture.decoder, f"captured on {options.iface}: {feeds}")
    summary["capture"] = capture.stats
    summary["elapsed_seconds"] = round(capture.seconds, 3)
    summary["messages_csv"] = options.decode.messages
    return summary


def problems(capture) -> list[tuple[str, str, str]]:
    """(kind, reason, sentence) for what went wrong in a finished capture: kind "tables" or "recording" (the
    metric that counts it), or "capture"."""
    from appliance.capture.stats import recording_lost
    from appliance.commands.capture import tables_incomplete

    out = []
    if capture.stop_reason == "interface_gone":
        out.append(("capture", "interface_gone", f"interface {capture.options.iface} went away"))
    rec_proc = capture.recording.proc if capture.recording is not None else None
    if rec_proc is not None and rec_proc.returncode:          # status 0: it finished after the capture did
        out.append(("recording", "process_ended", capture.recording.ended))
    lost = recording_lost(capture.stats)
    if lost:
        out.append(("recording", "frames_not_recorded", f"{lost} (summary.json capture.drops.recording)"))
    rec = capture.stats.get("recording") or {}
    if rec.get("write_errors"):
        out.append(("recording", "write", f"{rec['write_errors']} failed recording writes "
                                          f"(last: {rec.get('last_error')})"))
    tables = tables_incomplete(capture)
    if tables:
        out.append(("tables", "incomplete", tables))
    for pub in getattr(capture, "publishers", []):
        if pub.ended:
            out.append(("capture", "publisher_ended", pub.ended))
    return out
