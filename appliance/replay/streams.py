"""Reading an input's bytes front to back in bounded memory: plain files, pipes and FIFOs, and gzip of them.

Every input is read into one buffer allocated once per input (``CHUNK`` bytes): a file or a pipe with
``readinto``, gzip inflated with ``decompress(data, max_length)`` so that no call inflates more than the room it
is given, whatever the compression ratio (a gzip bomb included).  The bytes of a record cut by the end of a
chunk are moved to the front of the buffer and completed by the next read.

Files are read, not memory-mapped: a mapped file that shrinks while it is walked kills the process with SIGBUS,
which no Python code can catch safely, while a read of a shrunk file just returns less, and the input is then
reported cut short.  The copy costs little next to decoding (README, Replay).
"""
from __future__ import annotations

import os
import select
import stat
import sys
import zlib
from typing import Generator

import numpy as np

from appliance.errors import InputError

CHUNK = 64 << 20              # bytes per buffer handed to the walkers
RAW_BLOCK = 1 << 16           # compressed bytes read per call
INFLATE_STEP = 4 << 20        # most bytes one decompress call may produce (bounds its temporary)
WAIT_NOTICE_S = 1.0           # a FIFO silent for this long gets a line on stderr saying what replay waits for


def _open(path: str) -> int:
    """A blocking read descriptor for ``path``; a FIFO is opened without blocking (an open waits for a writer)
    and then polled, saying on stderr once that replay waits for it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"input {path} does not exist") from None
    except PermissionError:
        raise InputError(f"input {path} is not readable (permission denied)") from None
    except OSError as err:
        raise InputError(f"input {path} cannot be opened ({err.strerror})") from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise InputError(f"input {path} is a directory, not a capture or day file")
    if not stat.S_ISREG(mode):
        _wait_for_data(fd, path, "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file")
    os.set_blocking(fd, True)
    return fd


def _wait_for_data(fd: int, path: str, what: str) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    told = False
    while not poller.poll(int(WAIT_NOTICE_S * 1000)):
        if not told:
            print(f"appliance: waiting for {path} ({what}): nothing has written to it yet; "
                  "start its writer, or Ctrl-C", file=sys.stderr, flush=True)
            told = True


class RawInput:
    """An input's raw bytes from one open descriptor, read once.

    What detection reads is kept and served again after ``rewind``, so a pipe loses none of its head; a regular
    file's size at open is kept, so a file that ends before it is reported cut short.  A failed read ends the
    input (``problem`` says why) instead of losing the chunk it was filling.
    """

    def __init__(self, path: str):
        self.path = path
        fd = _open(path)
        info = os.fstat(fd)
        self.regular = stat.S_ISREG(info.st_mode)
        self.size = info.st_size if self.regular else 0
        self.fh = os.fdopen(fd, "rb", buffering=0)
        self.kept = bytearray()           # the stream's first bytes, while detection may read them again
        self.keeping = True
        self.at = 0                       # stream offset of the next byte to hand out
        self.total = 0                    # bytes read from the descriptor
        self.error: str | None = None

    def rewind(self, keep: bool = True) -> None:
        """Serve the stream again from its first byte; ``keep=False``: this is the last pass."""
        self.at = 0
        self.keeping = keep

    def readinto(self, view) -> int:
        if self.at < len(self.kept):
            n = min(len(view), len(self.kept) - self.at)
            view[:n] = self.kept[self.at:self.at + n]
            self.at += n
            if not self.keeping and self.at == len(self.kept):
                self.kept = bytearray()           # served for the last time; self.at == self.total
            return n
        if self.error is not None:
            return 0
        try:
            n = self.fh.readinto(view)
        except OSError as err:
            self.error = f"reading it failed at byte {self.total:,} ({err.strerror}); decoded what came before"
            return 0
        if self.keeping:
            self.kept += view[:n]
        self.total += n
        self.at += n
        return n

    def read(self, size: int) -> bytes:
        data = bytearray(size)
        return bytes(data[:self.readinto(memoryview(data))])

    def problem(self) -> str | None:
        """At the end of the input: why it ended early, if it did."""
        if self.error is None and self.regular and self.total < self.size:
            return (f"cut short while it was replayed: it ended at byte {self.total:,} of the {self.size:,} it had "
                    "when replay began; what was there is decoded")
        return self.error

    def close(self) -> None:
        self.fh.close()


class Gunzip:
    """A gzip stream of any number of members, inflated into the caller's buffer in bounded steps.

    A damaged or cut stream ends the input after everything that inflated cleanly; ``problem`` says why.
    """

    def __init__(self, raw: RawInput):
        self.raw = raw
        self.zs = zlib.decompressobj(wbits=31)
        self.pending = b""                # compressed bytes zlib has not taken yet
        self.done = False
        self.error: str | None = None

    def readinto(self, view) -> int:
        n = 0
        while n < len(view) and not self.done:
            at_eof = False
            if not self.pending:
                self.pending = self.raw.read(RAW_BLOCK)
                at_eof = not self.pending
            if self.zs.eof:
                if at_eof:                # the last member ended where the file does
                    self.done = True
                    break
                self.zs = zlib.decompressobj(wbits=31)      # the next member starts here
            try:
                out = self.zs.decompress(self.pending, min(len(view) - n, INFLATE_STEP))
            except zlib.error as err:
                self.error = f"gzip stream is damaged ({err}); decoded what came before it"
                self.done = True
                break
            view[n:n + len(out)] = out
            n += len(out)
            self.pending = self.zs.unused_data if self.zs.eof else self.zs.unconsumed_tail
            if at_eof and not out and not self.zs.eof:
                self.error = "gzip stream ends early (file cut short); decoded what it held"
                self.done = True
        return n

    def problem(self) -> str | None:
        # A shrunk file also ends its gzip stream early: the raw reason says more.
        return (self.raw.problem() or self.error) if self.done else None


def fill(reader, view, filled: int) -> int:
    """Read until ``view`` is full or the input ends; the new fill level."""
    while filled < len(view):
        n = reader.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def chunks(src) -> Generator[tuple[np.ndarray, int, bool, int], int | None, None]:
    """Yield ``(buffer, offset of the first byte to process, final, stream offset of buffer[0])`` for ``src``;
    the driver sends back the offset it reached, and the bytes from there on lead the next buffer.

    After the final buffer an input that ended early (cut short, damaged gzip, failed read) raises InputError.
    """
    buf = np.empty(CHUNK, np.uint8)
    view = memoryview(buf)
    reader = src.open_reader()
    try:
        filled, base, skip = 0, 0, src.start
        while True:
            filled = fill(reader, view, filled)
            final = filled < CHUNK
            chunk = buf[:filled]
            chunk.flags.writeable = False          # the walkers only read (and are compiled for read-only input)
            reached = yield chunk, skip, final, base
            if final:
                break
            reached = filled if reached is None else reached
            if reached <= 0:
                raise InputError(f"{src.path}: a record at byte {base:,} is larger than the {CHUNK:,}-byte buffer")
            tail = filled - reached
            buf[:tail] = buf[reached:filled].copy()
            base += reached
            filled, skip = tail, 0
        problem = reader.problem()
        if problem:
            raise InputError(f"{src.path}: {problem}")
    finally:
        src.close()
