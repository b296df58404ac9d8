"""What `appliance replay` and `appliance generate` leave behind: a run's directory is replaced whole or not at
all, write failures are one sentence, wire strings cannot reach the terminal raw, broken trades are listed,
and the summary says which day the timestamps count from (issue 8: items 6, 7, 12 and smaller things)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from reference import build as b

APPLIANCE = [sys.executable, "-m", "appliance"]

# A child that lowers its file-size limit, then runs the command line: writes past the limit fail with EFBIG
# (Python ignores SIGXFSZ, so the write returns the error instead of killing the process).
FSIZE_CHILD = """
import resource, sys
from appliance.cli import main
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""


def run_cli(*args, fsize: int | None = None):
    argv = [str(a) for a in args]
    if fsize is not None:
        return subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(fsize), *argv], capture_output=True,
                              text=True)
    return subprocess.run(APPLIANCE + argv, capture_output=True, text=True)


def day_file(tmp_path, messages, name="day.bin"):
    path = tmp_path / name
    path.write_bytes(b.dayfile_bytes(messages))
    return path


def busy_day(tmp_path, trades=3000):
    msgs = [b.directory(1, "AAA")]
    msgs += [b.trade("B", 100 + i, 10_000 + i, i + 1, ts=1_000_000 * (i + 1)) for i in range(trades)]
    return day_file(tmp_path, msgs, "busy.bin")


def tree(path):
    """Every file under ``path`` with its bytes, to check a directory was left exactly as it was."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_one_sentence(proc, code, words):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- item 7: a failed run leaves the previous one as it was; a run replaces all of it -----------------------
def test_failed_replay_keeps_the_previous_run(tmp_path):
    out = tmp_path / "out"
    first = run_cli("replay", busy_day(tmp_path), "--out", out, "-q")
    assert first.returncode == 0, first.stderr
    before = tree(out)
    assert json.loads(before["summary.json"])["messages"] == 3001
    proc = run_cli("replay", tmp_path / "missing.pcap", "--out", out, "-q")
    assert_one_sentence(proc, 3, "does not exist")
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy.bin", "out"], "a staging directory was left"


def test_rerun_without_messages_drops_the_old_messages_csv(tmp_path):
    out = tmp_path / "out"
    path = busy_day(tmp_path, trades=10)
    assert run_cli("replay", path, "--out", out, "-q", "--messages").returncode == 0
    assert (out / "messages.csv").exists()
    assert run_cli("replay", path, "--out", out, "-q").returncode == 0
    assert not (out / "messages.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["bbo.csv", "broken.csv", "summary.json", "trades.csv",
                                                     "vwap.csv"]


def test_directory_with_other_files_is_refused_and_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = run_cli("replay", busy_day(tmp_path, trades=5), "--out", out, "-q")
    assert_one_sentence(proc, 2, "holds files a replay does not write (notes.txt)")
    assert tree(out) == {"notes.txt": b"keep me"}


def test_staging_directory_of_a_killed_run_is_cleaned_up(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.partial-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "bbo.csv").write_text("half")
    assert run_cli("replay", busy_day(tmp_path, trades=5), "--out", tmp_path / "out", "-q").returncode == 0
    assert not stale.exists()


# -- item 6: a full disk or a file-size limit ------------------------------------------------------------
@pytest.mark.parametrize("extra", [(), ("--messages",)])
def test_file_size_limit_during_output_is_one_sentence_and_keeps_the_previous_run(tmp_path, extra):
    out = tmp_path / "out"
    path = busy_day(tmp_path)
    assert run_cli("replay", path, "--out", out, "-q").returncode == 0
    before = tree(out)
    proc = run_cli("replay", path, "--out", out, "-q", *extra, fsize=4096)
    assert_one_sentence(proc, 1, "failed: File too large")
    assert "the run is incomplete and was discarded" in proc.stderr
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy.bin", "out"]


@pytest.mark.root
def test_full_disk_during_output(tmp_path):
    """A 1 MiB tmpfs in a private mount namespace fills up: ENOSPC is one sentence and nothing is left."""
    path = busy_day(tmp_path, trades=20_000)
    script = f"""
set -e
mount -t tmpfs -o size=1m tiny {tmp_path}/mnt
{sys.executable} -m appliance replay {path} --out {tmp_path}/mnt/out -q --messages 2> {tmp_path}/err || echo $? > {tmp_path}/rc
ls -a {tmp_path}/mnt > {tmp_path}/left
"""
    (tmp_path / "mnt").mkdir()
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert (tmp_path / "rc").read_text().strip() == "1"
    err = (tmp_path / "err").read_text()
    assert "No space left on device" in err and "Traceback" not in err, err
    assert (tmp_path / "left").read_text().split() == [".", ".."]


def test_generate_into_a_file_size_limit(tmp_path):
    assert run_cli("generate", tmp_path / "warm" / "x.pcap", "--messages", "400").returncode == 0  # kernels cached
    target = tmp_path / "feed.pcap"
    target.write_bytes(b"previous")
    proc = run_cli("generate", target, "--messages", "5000", fsize=65536)
    assert_one_sentence(proc, 1, "File too large; nothing was written")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.pcap", "warm"]


# -- item 12: strings from the wire never reach the terminal raw -------------------------------------------
def test_hostile_session_name_and_symbol_are_escaped_in_the_report(tmp_path):
    session = b"\x1b]0;pwn\x07\x1b["                       # 10 bytes: retitle the window, start a CSI
    frames = [b.udp_frame(b.mold(1, [b.directory(1, "\x1b[2J\n"), b.trade("B", 5, 10_000, 1, ts=1)],
                                 session=session)),
              b.udp_frame(b.end_of_session(3, session=session))]
    path = tmp_path / "cap.pcap"
    path.write_bytes(b.pcap_bytes(frames))
    proc = run_cli("replay", path, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\x1b]0;pwn\\x07\\x1b[" in proc.stdout          # end of session names it, visibly escaped
    assert "\\x1b[2J\\x0a" in proc.stdout                    # the symbol in the top-by-volume list
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["end_of_session"] == [session.decode("latin-1")]   # the data itself is kept as sent


def test_printable_escapes_controls_and_keeps_text():
    from appliance.display import printable

    assert printable("AAPL 10-20 µs") == "AAPL 10-20 µs"
    assert printable("a\x1b[31mb\r\nc\x9bd\\") == "a\\x1b[31mb\\x0d\\x0ac\\x9bd\\\\"


# -- broken trades, the session's date, the live rate --------------------------------------------------------
def test_broken_trades_are_listed_in_broken_csv(tmp_path):
    path = day_file(tmp_path, [b.directory(1, "AAA"), b.add(7, "S", 100, 10_000, ts=1),
                               b.execute(7, 40, 555, ts=2), b.trade("B", 5, 20_000, 556, ts=3),
                               b.broken(555, ts=4)])
    out = tmp_path / "out"
    assert run_cli("replay", path, "--out", out, "-q").returncode == 0
    with open(out / "broken.csv") as fh:
        broken = list(csv.DictReader(fh))
    assert broken == [{"timestamp_ns": "4", "locate": "1", "symbol": "AAA", "match_number": "555"}]
    with open(out / "trades.csv") as fh:
        assert [row["match_number"] for row in csv.DictReader(fh)] == ["555", "556"]   # as printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["broken_match_numbers"] == [555]
    assert summary["symbols"]["AAA"]["volume"] == 45                                  # VWAP of trades as printed


def test_session_date_from_a_nasdaq_file_name_and_from_capture_time(tmp_path):
    from appliance.replay.summary import session_date

    assert session_date(["/data/01302019.NASDAQ_ITCH50.gz"], 0)["date"] == "2019-01-30"
    assert session_date(["/data/13302019.NASDAQ_ITCH50"], 0)["date"] is None          # no month 13
    # 2019-01-30 02:00 UTC is still the 29th in New York
    assert session_date(["x.pcap"], 1_548_813_600 * 10**9)["date"] == "2019-01-29"
    path = day_file(tmp_path, [b.system_event("O")], name="12242010.NASDAQ_ITCH50")
    assert run_cli("replay", path, "--out", tmp_path / "out", "-q").returncode == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["session_date"] == {"date": "2010-12-24", "from": "file name 12242010.NASDAQ_ITCH50"}
    assert "since midnight, US Eastern" in summary["timestamps"]


def test_rate_is_shown_in_the_unit_that_reads():
    from appliance.replay.summary import _rate

    assert _rate(20_000, 1.0) == "20,000 msg/s"
    assert _rate(13_000_000, 1.0) == "13.00 M msg/s"
    assert _rate(5, 0.0) == "0 msg/s"


def test_tables_that_do_not_fit_in_memory_are_one_sentence(tmp_path):
    child = ("import resource, sys\nfrom appliance.cli import main\n"
             "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\nsys.exit(main(sys.argv[1:]))\n")
    path = day_file(tmp_path, [b.system_event("O")])
    proc = subprocess.run([sys.executable, "-c", child, "replay", str(path), "--out", str(tmp_path / "out"),
                           "--order-capacity", "400000000"], capture_output=True, text=True)
    assert_one_sentence(proc, 2, "not enough memory for the tables: --order-capacity 400,000,000")
    assert not (tmp_path / "out").exists()


def test_error_sentences_escape_what_came_from_outside(tmp_path):
    """An input named with an ESC sequence: the one-sentence error names it without driving the terminal."""
    proc = run_cli("replay", tmp_path / "x\x1b[31mred.pcap", "--out", tmp_path / "out")
    assert_one_sentence(proc, 3, "does not exist")
    assert "\x1b" not in proc.stderr and "x\\x1b[31mred.pcap" in proc.stderr
