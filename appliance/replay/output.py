"""Writers for the replay's output files: bbo.csv, trades.csv, broken.csv, vwap.csv and (with --messages)
messages.csv.

Rows arrive as int64 buffers from the kernels and leave as CSV text formatted by ``csvfmt`` (numba).  Prices
are integer ticks of 1/10,000 dollar throughout.  A write that fails (a full disk, a file-size limit) becomes
``OutputFailed`` naming the file; the run's directory is then discarded (see ``rundir``).
"""
from __future__ import annotations

import csv
import io
import ipaddress
import json
from pathlib import Path

import numpy as np

from appliance.decode.mold import PACKET_STATUS
from appliance.decode.state import KIND_BROKEN, TAPE_KIND, TAPE_LOCATE, TAPE_MATCH, TAPE_TS
from appliance.errors import RunFailed, UserError
from appliance.files import written_whole
from appliance.replay.csvfmt import INT, SYMBOL, format_bbo, format_messages, format_rows, format_trades, format_vwap, \
    message_spec, spec

BBO_HEADER = "timestamp_ns,locate,symbol,bid_price,bid_size,ask_price,ask_size"
TRADES_HEADER = "timestamp_ns,locate,symbol,kind,side,shares,price,match_number"
BROKEN_HEADER = "timestamp_ns,locate,symbol,match_number"
VWAP_HEADER = "window_end_ns,locate,symbol,volume,notional,vwap,trades"
PACKETS_HEADER = "frame,line,session,sequence,count,status"

# row columns -> CSV columns: bbo, trades and vwap have kernels of their own (csvfmt.format_bbo, ...; their
# columns are the headers above), broken.csv the column spec (see state.Out for the row layout)
BROKEN_SPEC = spec((INT, TAPE_TS), (INT, TAPE_LOCATE), (SYMBOL, TAPE_LOCATE), (INT, TAPE_MATCH))


def format_broken(rows, n, sym, dst):
    return format_rows(rows, n, BROKEN_SPEC, sym, dst)

TEXT_BUFFER = 256 << 10          # formatted text is written while it is still in the L2 cache (16 MiB: ~8% slower)


class OutputFailed(RunFailed):
    """Writing an output file failed; the sentence names the file and the reason."""


class _guard:
    """Turn an OSError while writing ``path`` into OutputFailed (one sentence, no traceback)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and issubclass(kind, OSError):
            raise OutputFailed(f"writing {self.path.name} failed: {err.strerror or err}") from None
        return False


class _CsvFile:
    def __init__(self, path: Path, header: str | bytes, fmt, newline: bytes = b"\n"):
        """``fmt(rows, n, sym, text)`` formats rows into ``text``: (rows consumed, bytes used)."""
        self.path = path
        with _guard(path):
            self.fh = open(path, "wb")
            self.fh.write((header.encode() if isinstance(header, str) else header) + newline)
        self.fmt = fmt
        self.text = np.empty(TEXT_BUFFER, np.uint8)
        self.rows = 0

    def write(self, rows: np.ndarray, n: int, sym: np.ndarray) -> None:
        done = 0
        with _guard(self.path):
            while done < n:
                wrote, used = self.fmt(rows[done:n], n - done, sym, self.text)
                self.fh.write(self.text[:used].data)
                done += wrote
        self.rows += n

    def close(self) -> None:
        with _guard(self.path):
            self.fh.close()


class _MessagesFile(_CsvFile):
    """messages.csv: every applied message with all its fields, formatted by ``csvfmt.format_messages``."""

    def __init__(self, path: Path):
        self.fields, names = message_spec()
        header = io.StringIO()
        csv.writer(header).writerow(["session", "sequence"] + names)
        super().__init__(path, header.getvalue().rstrip("\r\n").encode(), None, b"\r\n")

    def write(self, msgs, meta, n, mold) -> None:
        names, name_len = _session_names(mold)
        done = 0
        with _guard(self.path):
            while done < n:
                wrote, used = format_messages(msgs[done:n], meta[done:n], n - done, self.fields, names, name_len,
                                              self.text)
                self.fh.write(self.text[:used].data)
                done += wrote
        self.rows += n


class CsvSink:
    """Receives rows from the engine and writes the output directory."""

    def __init__(self, out_dir: str, messages: bool, packets: bool = False):
        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write to output directory {out_dir}: {err.strerror or err}") from None
        self.bbo_file = _CsvFile(self.dir / "bbo.csv", BBO_HEADER, format_bbo)
        self.trades_file = _CsvFile(self.dir / "trades.csv", TRADES_HEADER, format_trades)
        self.broken_file = _CsvFile(self.dir / "broken.csv", BROKEN_HEADER, format_broken)
        self.vwap_file = _CsvFile(self.dir / "vwap.csv", VWAP_HEADER, format_vwap)
        self.messages_file = _MessagesFile(self.dir / "messages.csv") if messages else None
        self.packets_fh = None
        if packets:
            with _guard(self.dir / "packets.csv"):
                self.packets_fh = open(self.dir / "packets.csv", "w", newline="")
                self.packets_fh.write(PACKETS_HEADER + "\n")

    def packets(self, rows, n, mold):
        lines = [(int(mold.ln_group[i]), int(mold.ln_port[i])) for i in range(int(mold.ln_meta[0]))]
        names = [_session_name(mold, s) for s in range(int(mold.ss_meta[0]))]
        text = []
        for frame, line, sess, seq, count, status in rows[:n].tolist():
            group, port = lines[line]
            text.append(f"{frame},{ipaddress.IPv4Address(group)}:{port},{names[sess] if sess >= 0 else ''},"
                        f"{seq if seq >= 0 else ''},{count if count >= 0 else ''},{PACKET_STATUS[status]}\n")
        with _guard(self.dir / "packets.csv"):
            self.packets_fh.write("".join(text))

    def bbo(self, rows, n, sym):
        self.bbo_file.write(rows, n, sym)

    def trades(self, rows, n, sym):
        """The tape: trades to trades.csv (the kernel skips the feed-clock marks, which are for the VWAP windows
        only, and the broken trades), broken trades to broken.csv."""
        self.trades_file.write(rows, n, sym)
        tape = rows[:n]
        broken = tape[tape[:, TAPE_KIND] == KIND_BROKEN]
        if len(broken):
            self.broken_file.write(broken, len(broken), sym)

    def vwap(self, rows, n, sym, last):
        """Rows come window by window, each window's rows in locate order (the fold sorts them), so they are
        written as they come; window ends fall again only when a new epoch starts."""
        if n:
            self.vwap_file.write(rows, n, sym)

    def messages(self, msgs, meta, n, mold):
        self.messages_file.write(msgs, meta, n, mold)

    def gaps(self, rows, n):
        pass                              # the gaps are listed in summary.json

    def close(self) -> None:
        """Close every file, even after one fails; the first failure is raised."""
        closers = [self.bbo_file.close, self.trades_file.close, self.broken_file.close, self.vwap_file.close]
        if self.messages_file is not None:
            closers.append(self.messages_file.close)
        if self.packets_fh is not None:
            closers.append(self._close_packets)
        failed = None
        for close in closers:
            try:
                close()
            except OutputFailed as err:
                failed = failed or err
        if failed is not None:
            raise failed

    def _close_packets(self) -> None:
        with _guard(self.dir / "packets.csv"):
            self.packets_fh.close()


class NullSink:
    """Takes the rows and writes nothing: ``capture --no-tables`` keeps books and summary.json only."""

    def __init__(self, out_dir: str):
        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot write to output directory {out_dir}: {err.strerror or err}") from None

    def bbo(self, rows, n, sym):
        pass

    trades = bbo

    def vwap(self, rows, n, sym, last):
        pass

    def messages(self, msgs, meta, n, mold):
        pass

    def packets(self, rows, n, mold):
        pass

    def gaps(self, rows, n):
        pass

    def close(self) -> None:
        pass


def _session_names(mold) -> tuple[np.ndarray, np.ndarray]:
    """Every session's CSV-safe name as bytes (uint8[sessions, width]) and its length, for the kernels."""
    count = max(int(mold.ss_meta[0]), 1)
    names = np.zeros((count, mold.ss_name.shape[1]), np.uint8)
    lengths = np.zeros(count, np.int64)
    for s in range(int(mold.ss_meta[0])):
        name = _session_name(mold, s).encode("ascii")
        names[s, :len(name)] = np.frombuffer(name, np.uint8)
        lengths[s] = len(name)
    return names, lengths


def _session_name(mold, s: int) -> str:
    """The session name for CSV output: a hostile name cannot add a column or a row."""
    name = bytes(mold.ss_name[s]).decode("latin-1").rstrip(" ")
    return "".join(ch if " " < ch < "\x7f" and ch not in ',"' else "?" for ch in name)


def _json_text(data, depth: int = 2, level: int = 0) -> str:
    """JSON with the outer ``depth`` levels of objects one member a line (a symbol, a counter) and what is deeper
    on that line.  ``indent`` would make json use its pure-Python encoder throughout: 0.2 s of a day's replay
    for its 3,000 symbols, against a few ms here, where the C encoder writes every member."""
    if level < depth and isinstance(data, dict) and data:
        pad = " " * (level + 1)
        members = ",\n".join(f"{pad}{json.dumps(str(k))}: {_json_text(v, depth, level + 1)}" for k, v in data.items())
        return "{\n" + members + "\n" + " " * level + "}"
    return json.dumps(data)


def write_json(path: Path, data: dict) -> None:
    """Write ``path`` whole or not at all (a failed write leaves no partial file behind)."""
    try:
        with written_whole(path, "w") as fh:
            fh.write(_json_text(data) + "\n")
    except OSError as err:
        raise OutputFailed(f"writing {path.name} failed: {err.strerror or err}") from None
