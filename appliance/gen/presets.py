"""Named feeds: the committed sample capture and the benchmark day."""
from __future__ import annotations

from appliance.gen.spec import FeedSpec

# pcaps/sample.pcap: small enough to commit, and every impairment a decoder must survive.
SAMPLE = dict(seed=20261125, messages=20_000, instruments=300, ab=True, gaps=2, gaps_on="A", gaps_both=1,
              malformed=12, timeline="compact")
# The benchmark day: a full 03:30-20:05 session, 3,000 instruments, 20 M messages.
DAY = dict(seed=20261125, messages=20_000_000, instruments=3_000, timeline="full")

PRESETS = {"sample": SAMPLE, "day": DAY}


def preset(name: str, **overrides) -> FeedSpec:
    return FeedSpec(**{**PRESETS[name], **overrides})
