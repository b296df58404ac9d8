"""Our MoldUDP64 framing against tshark's moldudp64 dissector on a generated A/B capture.

Per packet: frame number, session, sequence and count equal ours (packets.csv).  Per message: the bytes tshark
shows for each sequence number, decoded by the layout table, equal the fields we wrote for that sequence
(messages.csv, first copy wins).
"""
from __future__ import annotations

import csv
import shutil
import subprocess

import pytest

from appliance.cli import main
from appliance.gen import FeedSpec, write_feed
from appliance.itch.layout import decode

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")

PORT = 26400


def tshark_packets(path):
    fields = ["frame.number", "moldudp64.session", "moldudp64.sequence", "moldudp64.count", "moldudp64.msgseq",
              "moldudp64.msgdata"]
    cmd = ["tshark", "-n", "-r", str(path), "-d", f"udp.port=={PORT},moldudp64", "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = []
    for line in proc.stdout.splitlines():
        frame, session, seq, count, msgseqs, msgdata = (line.split("\t") + [""] * 6)[:6]
        if not session:
            continue
        out.append((int(frame), session.rstrip(" "), int(seq), int(count),
                    [int(s) for s in msgseqs.split(",") if s], [d for d in msgdata.split(",") if d]))
    return out


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_framing_equals_tshark(tmp_path, fmt):
    path = tmp_path / f"feed.{fmt}"
    write_feed(path, FeedSpec(seed=11, messages=6000, instruments=80, ab=True, gaps=3, gaps_on="A"), fmt=fmt)
    out = tmp_path / "out"
    assert main(["replay", str(path), "--out", str(out), "--packets", "--messages", "-q"]) == 0
    theirs = tshark_packets(path)
    with open(out / "packets.csv") as fh:
        ours = [(int(r["frame"]), r["session"], int(r["sequence"]), int(r["count"])) for r in csv.DictReader(fh)]
    assert len(theirs) > 100
    assert ours == [t[:4] for t in theirs]

    first_copy = {}
    for _frame, _session, _seq, _count, msgseqs, datas in theirs:
        assert len(msgseqs) == len(datas)
        for s, d in zip(msgseqs, datas):
            first_copy.setdefault(s, d.replace(":", ""))
    with open(out / "messages.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["sequence"]) for r in rows] == sorted(first_copy)
    for row in rows:
        fields = decode(bytes.fromhex(first_copy[int(row["sequence"])]))
        assert {k: str(v) for k, v in fields.items()} == {k: row[k] for k in fields}, row["sequence"]
