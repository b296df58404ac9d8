"""Recording the feed to pcap files, written off the decode loop by a writer thread.

The capture loop copies each feed frame as a classic pcap record -- the 16-byte record header (little-endian
``ts_sec, ts_nsec, incl_len, orig_len``, the table ``pcap.PCAP_RECORD_HEADER_FIELDS``) then the frame -- back to back
into a buffer it took from the recorder, and submits the buffer when it is full (or every ~100 ms, partial).
The writer thread appends each buffer to the current file with ``os.write`` and gives the buffer back.  The
loop never waits: when every buffer is queued (the disk is behind), ``take()`` returns None and the loop
counts the records it could not record.

Files are nanosecond pcap (magic 0xA1B23C4D, version 2.4, the snaplen given, LINKTYPE_ETHERNET), named so
that they sort by time: ``PREFIX-YYYYmmddTHHMMSS.ffffffZ-NNNNNN.pcap`` (UTC wall clock at opening, then a
sequence number).  A file appears under its final name only once its header is written (it is made as a
hidden ``.NAME.part`` and linked into place), so every visible file is a pcap from its first byte.

Rotation happens before a buffer is written, so splits fall on buffer boundaries:

* by size (``rotate_bytes``): if the file plus this buffer would pass the limit, a new file is opened first
  -- a file never exceeds its limit, except one whose first buffer alone is larger (a buffer is never split);
* by time (``rotate_seconds``): when the wall clock has entered another multiple of ``rotate_seconds`` since
  the epoch (60 s files start at :00).  A split is accurate to one buffer hand-off (~100 ms): the records of
  the buffer that crosses the boundary stay in the old file, and a quiet feed opens the next file only with
  its next buffer.
* ``max_files``: after a file is opened, the oldest files of this prefix in the directory beyond the cap are
  deleted (never files of another prefix, never the current one).

A write error (ENOSPC, EFBIG, EIO...) never reaches the capture loop: it is counted (``write_errors``,
``last_error``), the buffer is dropped (``records_dropped``, ``bytes_dropped``), the part of it that did
reach the file is cut off again with ftruncate (so the file stays whole records), and the next buffer tries
again (a file that could not be cut back is closed, the next buffer opens a new one).  ``close()`` logs a
warning naming the count and the last error; ``stats`` holds them.

What a SIGKILL (or a crash) leaves: every file is a valid pcap up to its last complete record.  Only the file
being written can end in a record cut short by a write the kill interrupted; tshark reads it with an
"appears to have been cut short in the middle of a packet" warning and ``appliance replay`` counts it as one
``truncated_records``.  A hidden ``.NAME.part`` file may remain; the next recorder of that prefix in the
directory removes it.  Buffers submitted but not yet written are lost.  The files are not fsync'd: this
covers a process dying, not the machine losing power.
"""
from __future__ import annotations

import collections
import datetime
import logging
import os
import queue
import re
import struct
import threading
import time
from pathlib import Path

import numpy as np

from appliance.display import printable
from appliance.errors import UserError
from appliance.pcap import LINKTYPE_ETHERNET, NSEC_TCPDUMP_MAGIC, PCAP_FILE_HEADER, PCAP_FILE_HEADER_FIELDS, \
    PCAP_INCL_LEN_AT, PCAP_RECORD_HEADER, PCAP_VERSION_MAJOR, PCAP_VERSION_MINOR

# -- layouts (appliance.pcap: plain ints and field tables, so the capture loop imports no numpy objects) --------
PCAP_NS_MAGIC = NSEC_TCPDUMP_MAGIC
FILE_HEADER_STRUCT = struct.Struct("<" + "".join(fmt for _, fmt in PCAP_FILE_HEADER_FIELDS))
FILE_HEADER = PCAP_FILE_HEADER                # 24
RECORD_HEADER = PCAP_RECORD_HEADER            # 16
INCL_LEN = PCAP_INCL_LEN_AT                   # offset of incl_len in a record header

_log = logging.getLogger(__name__)
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


def count_records(data, nbytes: int) -> int:
    """Records whose headers start inside ``data[:nbytes]`` (used only for what a failed write dropped)."""
    view = memoryview(data).cast("B")
    pos = count = 0
    while pos + RECORD_HEADER <= nbytes:
        pos += RECORD_HEADER + int.from_bytes(view[pos + INCL_LEN:pos + INCL_LEN + 4], "little")
        count += 1
    return count


class Recorder:
    """Buffers lent to the capture loop, and a thread that appends the full ones to rotating pcap files.

    ``take()`` and ``submit()`` are the loop's side; both return at once.  Use as a context manager, or call
    ``close()``, which writes whatever was submitted, closes the file and joins the thread.
    """

    def __init__(self, directory, *, rotate_bytes: int | None = None, rotate_seconds: float | None = None,
                 max_files: int | None = None, snaplen: int = 65535, buffers: int = 16,
                 buffer_bytes: int = 4 << 20, prefix: str = "feed", clock=time.time):
        _check_options(rotate_bytes, rotate_seconds, max_files, snaplen, buffers, buffer_bytes, prefix)
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot make the recording directory {directory}: {err.strerror}") from None
        self.prefix = prefix
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.max_files = max_files
        self.snaplen = snaplen
        self.buffer_bytes = buffer_bytes
        self._clock = clock
        self._name_re = re.compile(re.escape(prefix) + r"-(\d{8}T\d{6}\.\d{6}Z)-(\d{6,})\.pcap")
        # The deque is the free list: append/popleft are atomic, so the loop and the writer need no lock.
        self._free = collections.deque(np.empty(buffer_bytes, dtype=np.uint8) for _ in range(buffers))
        self._full: queue.SimpleQueue = queue.SimpleQueue()
        self._fd = -1
        self._path: Path | None = None
        self._size = 0                    # bytes in the current file, header included
        self._period = 0                  # the rotate_seconds period the current file belongs to
        self._seq = 0
        self._closed = False
        self._stats = dict(files_opened=0, files_removed=0, bytes_written=0, buffers_written=0,
                           write_errors=0, last_error=None, records_dropped=0, bytes_dropped=0)
        self._remove_stale_parts()
        self._thread = threading.Thread(target=self._writer, name=f"recorder-{prefix}", daemon=True)
        self._thread.start()

    # -- the capture loop's side ----------------------------------------------------------------------
    def take(self) -> np.ndarray | None:
        """A free buffer of ``buffer_bytes``, or None when every buffer is queued or lent out."""
        try:
            return self._free.popleft()
        except IndexError:
            return None

    def submit(self, buf: np.ndarray, nbytes: int) -> None:
        """Queue the first ``nbytes`` of ``buf`` (whole records) for writing; the buffer returns to the free
        list once written (or dropped)."""
        if self._closed:
            raise RuntimeError("submit() on a closed Recorder")
        if not 0 <= nbytes <= len(buf):
            raise ValueError(f"nbytes {nbytes} outside the buffer (0-{len(buf)})")
        self._full.put((buf, nbytes))

    def close(self) -> None:
        """Write everything submitted, close the file, join the writer; a recording's errors are logged."""
        if self._closed:
            return
        self._closed = True
        self._full.put(None)
        self._thread.join()
        st = self._stats
        if st["write_errors"]:
            _log.warning("recorder %s in %s: %d write errors, %d records (%d bytes) not recorded; last: %s",
                         printable(self.prefix), printable(str(self.directory)), st["write_errors"],
                         st["records_dropped"], st["bytes_dropped"], printable(st["last_error"] or ""))

    @property
    def stats(self) -> dict:
        """files_opened, files_removed, bytes_written (records, headers excluded), buffers_written,
        write_errors, last_error, records_dropped, bytes_dropped."""
        return dict(self._stats)

    @property
    def current_file(self) -> Path | None:
        return self._path

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the writer thread ----------------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                break
            buf, nbytes = item
            try:
                if nbytes:
                    self._write_buffer(buf, nbytes)
            except Exception as err:        # never let the thread die: count, drop, go on
                self._failed(err)
                self._stats["records_dropped"] += count_records(buf, nbytes)
                self._stats["bytes_dropped"] += nbytes
            finally:
                self._free.append(buf)
        self._close_file()

    def _write_buffer(self, buf: np.ndarray, nbytes: int) -> None:
        now = self._clock()
        if self._fd >= 0 and self._must_rotate(nbytes, now):
            self._close_file()
        if self._fd < 0:
            self._open(now)
        start = self._size
        try:
            write_all(self._fd, buf[:nbytes])
        except OSError:
            self._cut_back(start)
            raise
        self._size += nbytes
        self._stats["bytes_written"] += nbytes
        self._stats["buffers_written"] += 1

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


def _check_options(rotate_bytes, rotate_seconds, max_files, snaplen, buffers, buffer_bytes, prefix) -> None:
    if rotate_bytes is not None and rotate_bytes <= FILE_HEADER:
        raise UserError(f"rotate size must be more than {FILE_HEADER} bytes, not {rotate_bytes}")
    if rotate_seconds is not None and not rotate_seconds > 0:
        raise UserError(f"rotate interval must be positive, not {rotate_seconds}")
    if max_files is not None and max_files < 1:
        raise UserError(f"max files must be at least 1, not {max_files}")
    if not 0 < snaplen <= 0x7FFFFFFF:
        raise UserError(f"snaplen must be 1-{0x7FFFFFFF}, not {snaplen}")
    if buffers < 1 or buffer_bytes < RECORD_HEADER:
        raise UserError(f"need at least one buffer of at least {RECORD_HEADER} bytes")
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
