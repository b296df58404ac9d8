"""Synthetic NASDAQ TotalView-ITCH 5.0 feeds over MoldUDP64: a realistic day, deterministic for a seed.

Public API (other packages and tests depend on exactly this):

* ``FeedSpec`` -- what to generate and how to carry it;
* ``generate_messages(spec) -> (buf, offsets)`` -- the day's ITCH messages back to back (uint8) and the
  offset of each (int64), in feed order;
* ``write_feed(path, spec, fmt="pcap"|"pcapng"|"dayfile", gzip=False, nanosecond=True, big_endian=False,
  pcapng_tsresol=9, pcapng_spb=False) -> Manifest`` -- the file, and what a correct decoder must report;
* ``PRESETS`` -- named specs: ``sample`` (pcaps/sample.pcap) and ``day`` (the 20 M-message benchmark day).

How it is built, one module per concern: ``universe`` (instruments), ``timeline`` and ``schedule`` (when
things happen), ``book``, ``orderflow`` and ``executions`` (the order-flow kernels), ``day`` (the merge
kernel), ``mold`` (packets), ``wire`` (frames), ``plan`` and ``hostile`` (A/B lines and impairments),
``capture`` (file formats), ``feed`` (the orchestration).
"""
from appliance.gen.feed import FORMATS, generate_messages, write_feed
from appliance.gen.manifest import Manifest
from appliance.gen.presets import PRESETS
from appliance.gen.spec import FeedSpec

__all__ = ["FeedSpec", "Manifest", "generate_messages", "write_feed", "PRESETS", "FORMATS"]
