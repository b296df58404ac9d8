"""Recording the feed to pcap files: the file side of the recording process (``cold.recording``).

The hot side appends each feed frame as a classic pcap record -- the 16-byte record header (little-endian
``ts_sec, ts_nsec, incl_len, orig_len``, the table ``pcap.PCAP_RECORD_HEADER_FIELDS``) then the frame -- to the
shared frame ring (``ring.deliver``); the recording process hands ``Recorder.write`` each run of whole records
the ring holds (one or two pieces: a run may wrap at the ring's end) and frees the ring once it returned.

Files are nanosecond pcap (magic 0xA1B23C4D, version 2.4, the snaplen given, LINKTYPE_ETHERNET), named so
that they sort by time: ``PREFIX-YYYYmmddTHHMMSS.ffffffZ-NNNNNN.pcap`` (UTC wall clock at opening, then a
sequence number).  A file appears under its final name only once its header is written (it is made as a
hidden ``.NAME.part`` and linked into place), so every visible file is a pcap from its first byte.

Rotation happens before a run is written, so splits fall on run boundaries (a run is what the ring held when the
process looked, at most every 20 ms):

* by size (``rotate_bytes``): if the file plus this run would pass the limit, a new file is opened first
  -- a file never exceeds its limit, except one whose first run alone is larger (a run is never split);
* by time (``rotate_seconds``): when the wall clock has entered another multiple of ``rotate_seconds`` since
  the epoch (60 s files start at :00).  A split is accurate to one run (~20 ms): the records of the run that
  crosses the boundary stay in the old file, and a quiet feed opens the next file only with its next run.
* ``max_files``: after a file is opened, the oldest files of this prefix in the directory beyond the cap are
  deleted (never files of another prefix, never the current one).

A write error (ENOSPC, EFBIG, EIO...) never reaches the capture: it is counted (``write_errors``,
``last_error``), the run is dropped (``records_dropped``, ``bytes_dropped``), the part of it that did reach the
file is cut off again with ftruncate (so the file stays whole records), and the next run tries again (a file
that could not be cut back is closed, the next run opens a new one).  ``stats`` holds the counts.

What a SIGKILL (or a crash) leaves: every file is a valid pcap up to its last complete record.  Only the file
being written can end in a record cut short by a write the kill interrupted; tshark reads it with an
"appears to have been cut short in the middle of a packet" warning and ``appliance replay`` counts it as one
``truncated_records``.  A hidden ``.NAME.part`` file may remain; the next recorder of that prefix in the
directory removes it.  The files are not fsync'd: this covers a process dying, not the machine losing power.
"""
from __future__ import annotations

import datetime
import os
import re
import struct
import time
from pathlib import Path


from appliance.errors import UserError
from appliance.pcap import LINKTYPE_ETHERNET, NSEC_TCPDUMP_MAGIC, PCAP_FILE_HEADER, PCAP_FILE_HEADER_FIELDS, \
    PCAP_INCL_LEN_AT, PCAP_RECORD_HEADER, PCAP_VERSION_MAJOR, PCAP_VERSION_MINOR

# -- layouts (appliance.pcap: plain ints and field tables, so the capture loop imports no numpy objects) --------
PCAP_NS_MAGIC = NSEC_TCPDUMP_MAGIC
FILE_HEADER_STRUCT = struct.Struct("<" + "".join(fmt for _, fmt in PCAP_FILE_HEADER_FIELDS))
FILE_HEADER = PCAP_FILE_HEADER                # 24
RECORD_HEADER = PCAP_RECORD_HEADER            # 16
INCL_LEN = PCAP_INCL_LEN_AT                   # offset of incl_len in a record header

_os_write = os.write                          # the one call that puts bytes in a file (tests substitute it)


def file_header(snaplen: int = 65535) -> bytes:
    return FILE_HEADER_STRUCT.pack(PCAP_NS_MAGIC, PCAP_VERSION_MAJOR, PCAP_VERSION_MINOR, 0, 0, snaplen,
                                   LINKTYPE_ETHERNET)


def write_header(fd: int, snaplen: int = 65535) -> None:
    """Write the nanosecond pcap file header at ``fd``'s position."""
    write_all(fd, file_header(snaplen))


def write_all(fd: int, data) -> None:
    """``os.write`` until every byte of ``data`` (any buffer) is written; OSError on failure."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        n = _os_write(fd, view[done:])
        if n <= 0:
            raise OSError(5, "write made no progress")
        done += n


def count_records(pieces) -> int:
    """Records whose headers start inside the bytes of ``pieces`` taken in order (used only for what a failed
    write dropped)."""
    data = b"".join(memoryview(p).cast("B") for p in pieces)
    pos = count = 0
    while pos + RECORD_HEADER <= len(data):
        pos += RECORD_HEADER + int.from_bytes(data[pos + INCL_LEN:pos + INCL_LEN + 4], "little")
        count += 1
    return count


class Recorder:
    """Rotating pcap files in ``directory``: ``write`` appends runs of whole records.  Use as a context manager,
    or call ``close()``."""

    def __init__(self, directory, *, rotate_bytes: int | None = None, rotate_seconds: float | None = None,
                 max_files: int | None = None, snaplen: int = 65535, prefix: str = "feed", clock=time.time):
        _check_options(rotate_bytes, rotate_seconds, max_files, snaplen, prefix)
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot make the recording directory {directory}: {err.strerror}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise UserError(f"cannot write in the recording directory {directory}")
        self.prefix = prefix
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.max_files = max_files
        self.snaplen = snaplen
        self._clock = clock
        self._name_re = re.compile(re.escape(prefix) + r"-(\d{8}T\d{6}\.\d{6}Z)-(\d{6,})\.pcap")
        self._fd = -1
        self._path: Path | None = None
        self._size = 0                    # bytes in the current file, header included
        self._period = 0                  # the rotate_seconds period the current file belongs to
        self._seq = 0
        self._closed = False
        self._stats = dict(files_opened=0, files_removed=0, bytes_written=0, writes=0,
                           write_errors=0, last_error=None, records_dropped=0, bytes_dropped=0)
        self._remove_stale_parts()

    def write(self, pieces) -> None:
        """Append the records in ``pieces`` (buffers taken in order; together whole records) to the current file,
        rotating first if a limit says so.  A failure is counted, never raised (see the module docstring)."""
        nbytes = sum(memoryview(p).nbytes for p in pieces)
        if self._closed:
            raise RuntimeError("write() on a closed Recorder")
        if not nbytes:
            return
        try:
            self._write_run(pieces, nbytes)
        except Exception as err:          # never let a recording stop: count, drop, go on
            self._failed(err)
            self._stats["records_dropped"] += count_records(pieces)
            self._stats["bytes_dropped"] += nbytes

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_file()

    @property
    def stats(self) -> dict:
        """files_opened, files_removed, bytes_written (records, file headers excluded), writes, write_errors,
        last_error, records_dropped, bytes_dropped."""
        return dict(self._stats)

    @property
    def current_file(self) -> Path | None:
        return self._path

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_run(self, pieces, nbytes: int) -> None:
        now = self._clock()
        if self._fd >= 0 and self._must_rotate(nbytes, now):
            self._close_file()
        if self._fd < 0:
            self._open(now)
        start = self._size
        try:
            for piece in pieces:
                write_all(self._fd, piece)
        except OSError:
            self._cut_back(start)
            raise
        self._size += nbytes
        self._stats["bytes_written"] += nbytes
        self._stats["writes"] += 1

    def _must_rotate(self, nbytes: int, now: float) -> bool:
        if self.rotate_bytes and self._size > FILE_HEADER and self._size + nbytes > self.rotate_bytes:
            return True
        return bool(self.rotate_seconds) and self._period_of(now) != self._period

    def _period_of(self, now: float) -> int:
        return int(now // self.rotate_seconds) if self.rotate_seconds else 0

    def _open(self, now: float) -> None:
        stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        while True:
            self._seq += 1
            path = self.directory / f"{self.prefix}-{stamp}-{self._seq:06d}.pcap"
            part = self.directory / f".{path.name}.part"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                write_header(fd, self.snaplen)
                try:
                    os.link(part, path)             # unlike rename, never replaces an existing file
                except FileExistsError:
                    os.close(fd)
                    os.unlink(part)
                    continue
                os.unlink(part)
            except BaseException:
                _close_quietly(fd)
                _unlink_quietly(part)
                raise
            break
        self._fd, self._path, self._size = fd, path, FILE_HEADER
        self._period = self._period_of(now)
        self._stats["files_opened"] += 1
        if self.max_files:
            self._prune()

    def _cut_back(self, size: int) -> None:
        """After a failed write: drop its partial bytes so the file ends on a whole record, or give it up."""
        try:
            os.ftruncate(self._fd, size)
            os.lseek(self._fd, size, os.SEEK_SET)
        except OSError as err:
            self._failed(err)
            self._close_file()

    def _close_file(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd, self._path = self._fd, -1, None
        try:
            os.close(fd)
        except OSError as err:
            self._failed(err)

    def _prune(self) -> None:
        ours = sorted((m.group(1), int(m.group(2)), name) for name in os.listdir(self.directory)
                      if (m := self._name_re.fullmatch(name)))
        for _, _, name in ours[:max(0, len(ours) - self.max_files)]:
            if self._path is not None and name == self._path.name:
                continue
            try:
                os.unlink(self.directory / name)
                self._stats["files_removed"] += 1
            except FileNotFoundError:
                pass
            except OSError as err:
                self._failed(err)

    def _remove_stale_parts(self) -> None:
        """Hidden part files a killed recorder of this prefix left behind (header only, never linked)."""
        part_re = re.compile(r"\." + self._name_re.pattern + r"\.part")
        for name in os.listdir(self.directory):
            if part_re.fullmatch(name):
                _unlink_quietly(self.directory / name)

    def _failed(self, err: BaseException) -> None:
        self._stats["write_errors"] += 1
        self._stats["last_error"] = f"{type(err).__name__}: {err}"


def _check_options(rotate_bytes, rotate_seconds, max_files, snaplen, prefix) -> None:
    if rotate_bytes is not None and rotate_bytes <= FILE_HEADER:
        raise UserError(f"rotate size must be more than {FILE_HEADER} bytes, not {rotate_bytes}")
    if rotate_seconds is not None and not rotate_seconds > 0:
        raise UserError(f"rotate interval must be positive, not {rotate_seconds}")
    if max_files is not None and max_files < 1:
        raise UserError(f"max files must be at least 1, not {max_files}")
    if not 0 < snaplen <= 0x7FFFFFFF:
        raise UserError(f"snaplen must be 1-{0x7FFFFFFF}, not {snaplen}")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", prefix):
        raise UserError(f"file prefix {prefix!r} must be letters, digits, '.', '_' or '-'")


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
