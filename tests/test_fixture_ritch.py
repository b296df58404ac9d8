"""RITCH's simulated day file through the engine (``--messages``) and through the reference, against the
counts RITCH publishes for it (see ../shared/fixtures/README.md).  The truth below is copied from there.
"""
from __future__ import annotations

import csv
from collections import Counter

import pytest

from appliance.itch.layout import MESSAGES, TYPES, all_field_names
from reference import reference_replay

FIXTURE = "ex20101224.TEST_ITCH_50"

TRUTH_BY_TYPE = {"S": 6, "R": 3, "H": 3, "A": 4997, "F": 3, "E": 198, "X": 45, "D": 1745, "U": 12, "P": 5000}
TRUTH_ADDS_BY_SIDE = {"B": 2432, "S": 2568}
TRUTH_ADDS_BY_STOCK = {"ALC": 950, "BOB": 2482, "CHAR": 1568}
TRUTH_TRADES_BY_SIDE = {"B": 5000}
TRUTH_TRADES_BY_STOCK = {"ALC": 1885, "BOB": 1658, "CHAR": 1457}
TRUTH_MODIFICATIONS = {"D": 1745, "E": 198, "U": 12, "X": 45}
TRUTH_WITH_MATCH_NUMBER, TRUTH_WITH_NEW_REF, TRUTH_SYSTEM_EVENTS = 198, 12, 6


def tally(messages) -> dict:
    """The published counts, from an iterable of {field name: value} (absent field = not in the message)."""
    messages = list(messages)
    by_type = Counter(m["Message Type"] for m in messages)
    adds = [m for m in messages if m["Message Type"] in "AF"]
    trades = [m for m in messages if m["Message Type"] == "P"]
    modifications = [m for m in messages if m["Message Type"] in TRUTH_MODIFICATIONS]
    return {
        "by_type": {t: by_type.get(t, 0) for t in TYPES},
        "adds_by_side": dict(Counter(m["Buy/Sell Indicator"] for m in adds)),
        "adds_by_stock": dict(Counter(m["Stock"] for m in adds)),
        "trades_by_side": dict(Counter(m["Buy/Sell Indicator"] for m in trades)),
        "trades_by_stock": dict(Counter(m["Stock"] for m in trades)),
        "modifications": dict(Counter(m["Message Type"] for m in modifications)),
        "with_match_number": sum(1 for m in modifications if m.get("Match Number") is not None),
        "with_new_ref": sum(1 for m in modifications if m.get("New Order Reference Number") is not None),
        "system_events": by_type.get("S", 0),
    }


def assert_truth(counts: dict) -> None:
    assert counts["by_type"] == {t: TRUTH_BY_TYPE.get(t, 0) for t in TYPES}
    assert sum(counts["by_type"].values()) == 12_012
    assert counts["adds_by_side"] == TRUTH_ADDS_BY_SIDE
    assert counts["adds_by_stock"] == TRUTH_ADDS_BY_STOCK
    assert counts["trades_by_side"] == TRUTH_TRADES_BY_SIDE
    assert counts["trades_by_stock"] == TRUTH_TRADES_BY_STOCK
    assert counts["modifications"] == TRUTH_MODIFICATIONS
    assert counts["with_match_number"] == TRUTH_WITH_MATCH_NUMBER
    assert counts["with_new_ref"] == TRUTH_WITH_NEW_REF
    assert counts["system_events"] == TRUTH_SYSTEM_EVENTS


def read_messages_csv(path) -> list[dict]:
    """messages.csv rows as {field: value} holding only the fields of each row's type, ints as int."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header == ["session", "sequence"] + all_field_names()
        rows = []
        for raw in reader:
            row = dict(zip(header, raw))
            spec = MESSAGES[row["Message Type"]]
            rows.append({fld.name: row[fld.name] if fld.kind == "alpha" else int(row[fld.name])
                         for fld in spec.fields})
    return rows


def test_reference_reproduces_the_published_counts(shared_fixtures, reference_messages):
    assert_truth(tally(reference_messages))
    summary = reference_replay(shared_fixtures / FIXTURE)["summary"]
    assert summary["messages_by_type"] == {t: TRUTH_BY_TYPE.get(t, 0) for t in TYPES}
    assert summary["bad_messages"] == 0 and summary["truncated_records"] == 0 and summary["packets"] == 0


@pytest.fixture(scope="module")
def engine_messages(shared_fixtures, tmp_path_factory) -> list[dict]:
    from appliance.cli import main

    out = tmp_path_factory.mktemp("ritch") / "out"
    assert main(["replay", str(shared_fixtures / FIXTURE), "--out", str(out), "--messages"]) == 0
    return read_messages_csv(out / "messages.csv")


@pytest.fixture(scope="module")
def reference_messages(shared_fixtures) -> list[dict]:
    return [m for _session, _seq, m in reference_replay(shared_fixtures / FIXTURE)["messages"]]


def test_engine_reproduces_the_published_counts(engine_messages):
    assert_truth(tally(engine_messages))


@pytest.mark.parametrize("mtype", sorted(TRUTH_BY_TYPE))
def test_engine_messages_csv_decodes_every_field_like_the_reference(engine_messages, reference_messages, mtype):
    engine = [m for m in engine_messages if m["Message Type"] == mtype]
    reference = [m for m in reference_messages if m["Message Type"] == mtype]
    assert len(engine) == len(reference) == TRUTH_BY_TYPE[mtype]
    for index, (got, want) in enumerate(zip(engine, reference)):
        assert got == want, f"{mtype} #{index}"
