"""The instruments of a synthetic day: symbols, stock locates, reference prices and how active each one is.

Locates are assigned in symbol order, as NASDAQ does, so activity is unrelated to the locate number: a decoder
cannot get lucky by assuming busy stocks have small locates.  Activity follows a Zipf-Mandelbrot law (weight
of the k-th busiest ~ 1/(k + 10)**1.3): with 3,000 instruments the busiest 300 carry about 78% of the order
flow and the busiest single one about 3%, close to the shape of a real NASDAQ day, where a pure Zipf law would
give the top five stocks a third of everything.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.gen.rng import Stream

ZIPF_EXPONENT = 1.3
ZIPF_OFFSET = 10.0
MIN_PRICE, MAX_PRICE = 5.0, 500.0          # dollars; log-uniform in between
PRICE_SCALE = 10_000                       # Price(4): 1/10,000 dollar
TICK = 100                                 # one cent, the tick for every stock priced at $1 or more
# Symbol lengths as they occur on NASDAQ (mostly 3-4 letters, a few 5-letter ETFs and warrants, rare
# 1-2 letter and 6-8 letter test and when-issued symbols): weights for lengths 1..8.
_NAME_LENGTH_WEIGHTS = np.array([0.01, 0.04, 0.30, 0.52, 0.10, 0.015, 0.01, 0.005])
# Listing venue (ITCH Market Category): NASDAQ Global Select, Global Market, Capital Market, then the
# non-NASDAQ listings NASDAQ also trades (NYSE, NYSE Arca, NYSE American, Cboe BZX).
_CATEGORIES = np.array([b"Q", b"G", b"S", b"N", b"P", b"A", b"Z"])
_CATEGORY_WEIGHTS = np.array([0.35, 0.13, 0.12, 0.22, 0.10, 0.03, 0.05])
# Market participant IDs: the attributions on 'F' adds and the market makers of 'L' messages.
MPIDS = (b"GSCO", b"MSCO", b"JPMS", b"UBSS", b"CDRG", b"NITE", b"VIRT", b"SUSQ", b"ETMM", b"CITD", b"BOFA",
         b"JANE", b"HRTF", b"TWOS", b"XTXM", b"WABR")


@dataclass(frozen=True)
class Universe:
    names: np.ndarray          # (n, 8) uint8: symbols, space padded, in locate order (locate = index + 1)
    activity: np.ndarray       # float64 (n,): share of the order flow, sums to 1
    rank: np.ndarray           # int64 (n,): 0 for the busiest instrument
    price: np.ndarray          # int64 (n,): opening reference price in Price(4) units, a whole number of ticks
    round_lot: np.ndarray      # int64 (n,)
    category: np.ndarray       # S1 (n,): ITCH Market Category
    etp: np.ndarray            # bool (n,): exchange-traded product

    def __len__(self) -> int:
        return len(self.rank)

    @property
    def nasdaq_listed(self) -> np.ndarray:
        return np.isin(self.category, _CATEGORIES[:3])

    def symbol(self, i: int) -> str:
        return bytes(self.names[i]).decode("ascii").rstrip()

    def by_rank(self) -> np.ndarray:
        """Instrument indices from the busiest to the quietest."""
        return np.argsort(self.rank, kind="stable")


def make_universe(seed: int, n: int) -> Universe:
    names = _symbols(Stream(seed, "universe.symbols"), n)
    draws = Stream(seed, "universe.attributes")
    rank = draws.permutation(n)
    weight = (rank + 1 + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    dollars = MIN_PRICE * (MAX_PRICE / MIN_PRICE) ** draws.unit(n)
    price = np.rint(dollars * PRICE_SCALE / TICK).astype(np.int64) * TICK
    # SEC round-lot reform (in force since November 2025): 40 shares above $250, 10 above $1,000.
    round_lot = np.where(price > 1000 * PRICE_SCALE, 10, np.where(price > 250 * PRICE_SCALE, 40, 100))
    cumulative = np.cumsum(_CATEGORY_WEIGHTS)
    category = _CATEGORIES[np.minimum(np.searchsorted(cumulative, draws.unit(n) * cumulative[-1], side="right"),
                                      len(_CATEGORIES) - 1)]
    etp = draws.unit(n) < 0.12
    return Universe(names=names, activity=weight / weight.sum(), rank=rank.astype(np.int64), price=price,
                    round_lot=round_lot.astype(np.int64), category=category, etp=etp)


def _symbols(draws: Stream, n: int) -> np.ndarray:
    """n distinct symbols of 1-8 uppercase letters, sorted (locate order)."""
    cumulative = np.cumsum(_NAME_LENGTH_WEIGHTS)
    # Short lengths have few distinct symbols (26 of length 1): cap how many of each length may be taken.
    room = {k: 26 ** k // 2 for k in range(1, 9)}
    seen: set[bytes] = set()
    while len(seen) < n:
        want = 2 * (n - len(seen)) + 16
        lengths = 1 + np.searchsorted(cumulative, draws.unit(want) * cumulative[-1], side="right")
        letters = (draws.below(want * 8, 26) + ord("A")).astype(np.uint8).reshape(want, 8)
        for length, row in zip(lengths.tolist(), letters):
            length = min(length, 8)
            name = row[:length].tobytes()
            if name in seen or room[length] == 0:
                continue
            room[length] -= 1
            seen.add(name)
            if len(seen) == n:
                break
    ordered = sorted(seen)
    out = np.full((n, 8), ord(" "), dtype=np.uint8)
    for i, name in enumerate(ordered):
        out[i, :len(name)] = np.frombuffer(name, dtype=np.uint8)
    return out
