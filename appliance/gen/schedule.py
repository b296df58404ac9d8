"""Everything in a day that is not order flow: system events, the stock directory, trading actions, halts,
market-maker positions, circuit-breaker levels, IPO and direct-listing updates, RPII, imbalances and crosses.

These are built here, vectorised, as complete messages with their timestamps (``Schedule``); the day kernel
merges them with the order flow by time.  A few need the state of the book when they go out -- a cross or an
imbalance is priced at the book's midpoint then, a LULD collar around it, a broken trade names a recent
execution, a halt stops executions -- so each carries a ``patch`` code telling the kernel what to fill in or
update.  Which instruments play which part (the IPO, the paused stock...) is fixed by activity rank, so every
message type appears in any day of at least a few thousand messages.  Smaller days keep the system events
and the directory and as many of the other parts as fit, rarest message types first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.gen.encode import encode_rows
from appliance.gen.rng import Stream
from appliance.gen.timeline import SECOND, Timeline
from appliance.gen.universe import MPIDS, TICK, Universe

PATCH_STATIC, PATCH_TRADING_ACTION, PATCH_HALT, PATCH_CROSS, PATCH_NOII, PATCH_COLLAR, PATCH_BREAK = range(7)
MS, US = 1_000_000, 1_000
CROSS_SHARE = 0.04                     # at most this share of the day's messages are NOII and cross messages
OPEN_NOII_BEFORE = (300, 240, 180, 120, 60, 30, 10)          # seconds before the open
CLOSE_NOII_BEFORE = (600, 300, 240, 180, 120, 60, 30, 10)    # seconds before the close
SYSTEM_EVENTS = "OSQMEC"                # start of messages, system hours, market hours, ends


@dataclass(frozen=True)
class Schedule:
    ts: np.ndarray             # int64, non-decreasing
    offset: np.ndarray         # int64: start of each message in ``templates``
    patch: np.ndarray          # uint8: what the kernel fills in or updates (PATCH_*)
    templates: np.ndarray      # uint8: the messages, in the order they were built (not time order)

    def __len__(self) -> int:
        return len(self.ts)


class _Builder:
    def __init__(self):
        self.parts: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.rows = 0

    def add(self, mtype: str, ts, patch: int = PATCH_STATIC, **columns) -> None:
        ts = np.atleast_1d(np.asarray(ts, dtype=np.int64))
        if len(ts):
            self.parts.append((ts, encode_rows(mtype, len(ts), Timestamp=ts, **columns), patch))
            self.rows += len(ts)

    def rollback(self, parts: int) -> None:
        while len(self.parts) > parts:
            self.rows -= len(self.parts.pop()[0])

    def build(self) -> Schedule:
        ts = np.concatenate([p[0] for p in self.parts])
        lengths = np.concatenate([np.full(len(p[0]), p[1].shape[1], np.int64) for p in self.parts])
        patch = np.concatenate([np.full(len(p[0]), p[2], np.uint8) for p in self.parts])
        offset = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        templates = np.concatenate([p[1].reshape(-1) for p in self.parts])
        order = np.argsort(ts, kind="stable")          # ties keep build order: S 'Q' before the open cross
        return Schedule(ts[order], offset[order], patch[order], templates)


@dataclass(frozen=True)
class Roles:
    """Instruments with a part to play, by activity rank (busiest first).  With few instruments one plays
    several parts: the IPO, the pause and the operational halt come one after another, never at once."""
    ipo: int                   # quietest: halted until its IPO cross
    listing: int               # second quietest: direct listing price discovery (O)
    paused: int                # a LULD trading pause with its auction collar (J) and halt cross
    op_halted: int             # an operational halt (h)
    participants: np.ndarray   # have registered market makers (L)


def assign_roles(u: Universe) -> Roles:
    order = u.by_rank()
    n = len(u)
    return Roles(ipo=int(order[-1]), listing=int(order[-2 % n]), paused=int(order[1 % n]),
                 op_halted=int(order[3 % n]), participants=np.sort(order[:min(n, 20)]))


def mandatory_messages(instruments: int) -> int:
    """What every day has: the six system events and one directory entry per instrument."""
    return len(SYSTEM_EVENTS) + instruments


def build_schedule(u: Universe, tl: Timeline, messages: int, seed: int) -> Schedule:
    """Everything but the order flow.  The optional parts go in by priority while they fit in half of what
    the system events and the directory leave of ``messages``."""
    b = _Builder()
    draws = Stream(seed, "schedule")
    roles = assign_roles(u)
    times = (tl.start_of_messages, tl.start_of_system, tl.market_open, tl.market_close, tl.end_of_system,
             tl.end_of_messages)
    for code, t in zip(SYSTEM_EVENTS, times):
        b.add("S", t, Event_Code=code)
    _directory(b, u, roles, tl.start_of_messages + MS)
    budget = b.rows + (messages - mandatory_messages(len(u))) // 2
    features = (
        lambda: b.add("V", tl.start_of_messages + MS // 2, Level_1=539_400_000_000, Level_2=504_600_000_000,
                      Level_3=464_000_000_000),       # 7%, 13%, 20% below an S&P 500 close of 5,800.00
        lambda: b.add("W", tl.market_fraction(0.95), Breached_Level="1"),   # after 15:25: no halt follows
        lambda: _ipo(b, u, roles.ipo, tl),
        lambda: b.add("B", tl.market_fraction(0.5), PATCH_BREAK),        # after the IPO cross: a match exists
        lambda: _luld_pause(b, u, roles.paused, tl),
        lambda: b.add("h", [tl.market_fraction(0.6), tl.market_fraction(0.6) + tl.pause_ns], PATCH_HALT,
                      Stock_Locate=roles.op_halted + 1, Stock=bytes(u.names[roles.op_halted]), Market_Code="Q",
                      Operational_Halt_Action=["H", "T"]),
        lambda: _direct_listing(b, u, roles.listing, tl),
        lambda: _intraday_notices(b, u, tl, draws),
        lambda: _participants(b, u, roles, tl.start_of_system - 10 * MS),
        lambda: _trading_states(b, u, roles, tl.start_of_system - 20 * MS),
        lambda: _crosses(b, u, roles, tl, int(min(messages * CROSS_SHARE, budget - b.rows)), draws),
    )
    for i, feature in enumerate(features):
        mark = len(b.parts)
        feature()
        if b.rows > budget:
            b.rollback(mark)
            if i == 2:                    # no IPO cross, so the break (next) would have no execution to name
                break
    return b.build()


def _directory(b: _Builder, u: Universe, roles: Roles, t: int) -> None:
    """The stock directory (R), one message per instrument in locate order, 2 us apart."""
    n = len(u)
    listed = u.nasdaq_listed
    etp = u.etp
    b.add("R", t + 2 * US * np.arange(n), Stock_Locate=np.arange(1, n + 1), Stock=list(map(bytes, u.names)),
          Market_Category=list(u.category), Financial_Status_Indicator=_pick(listed, "N", " "),
          Round_Lot_Size=u.round_lot, Round_Lots_Only="N", Issue_Classification=_pick(etp, "Q", "C"),
          Issue_Sub_Type=_pick(etp, "I ", "Z "), Authenticity="P",
          Short_Sale_Threshold_Indicator=_pick(listed, "N", " "),
          IPO_Flag=[("Y" if i == roles.ipo else ("N" if listed[i] else " ")) for i in range(n)],
          LULD_Reference_Price_Tier=_pick(u.rank < max(1, n // 5), "1", "2"), ETP_Flag=_pick(etp, "Y", "N"),
          Inverse_Indicator="N")


def _trading_states(b: _Builder, u: Universe, roles: Roles, t: int) -> None:
    """Trading state (H 'T') for every instrument before system hours; the IPO has its own (halted)."""
    others = np.array([i for i in range(len(u)) if i != roles.ipo], np.int64)
    b.add("H", t + 2 * US * np.arange(len(others)), PATCH_TRADING_ACTION, Stock_Locate=others + 1,
          Stock=[bytes(u.names[i]) for i in others], Trading_State="T")


def _participants(b: _Builder, u: Universe, roles: Roles, t: int) -> None:
    """Three registered market makers (L) in each of the busiest instruments, the first one primary."""
    mm = np.repeat(roles.participants, 3)
    mpids = [MPIDS[(int(i) * 7 + j * 5) % len(MPIDS)] for i in roles.participants for j in range(3)]
    b.add("L", t + 2 * US * np.arange(len(mm)), MPID=mpids, Stock_Locate=mm + 1,
          Stock=[bytes(u.names[i]) for i in mm], Primary_Market_Maker=["Y", "N", "N"] * len(roles.participants),
          Market_Maker_Mode="N", Market_Participant_State="A")


def _crosses(b: _Builder, u: Universe, roles: Roles, tl: Timeline, allowance: int, draws: Stream) -> None:
    """Imbalances (I) ahead of the open and close, and the opening and closing crosses (Q), for as many of
    the busiest instruments as ``allowance`` messages cover (the IPO joins only when it is alone)."""
    per_instrument = 2 + len(OPEN_NOII_BEFORE) + len(CLOSE_NOII_BEFORE)
    order = u.by_rank()
    candidates = order[order != roles.ipo] if len(u) > 1 else order
    crossing = np.sort(candidates[:max(0, allowance) // per_instrument])
    _noii(b, u, crossing, tl.market_open, OPEN_NOII_BEFORE, "O", tl.start_of_system, draws)
    _cross(b, u, crossing, tl.market_open + 50 * MS, "O", 1, draws)
    _noii(b, u, crossing, tl.market_close, CLOSE_NOII_BEFORE, "C", tl.market_open, draws)
    _cross(b, u, crossing, tl.market_close + 50 * MS, "C", 2, draws)


def _pick(mask: np.ndarray, yes: str, no: str) -> list[str]:
    return [yes if m else no for m in mask]


def _ipo(b: _Builder, u: Universe, i: int, tl: Timeline) -> None:
    """Halted from the start ("IPO1"), the anticipated release for quotation (K), quotation only, then the
    IPO (halt) cross and trading."""
    release = tl.market_fraction(0.2)
    stock = dict(Stock_Locate=i + 1, Stock=bytes(u.names[i]))
    b.add("H", tl.start_of_system - 30 * MS, PATCH_TRADING_ACTION, Trading_State="H", Reason="IPO1", **stock)
    b.add("K", tl.start_of_system + SECOND, IPO_Quotation_Release_Time=release // SECOND,
          IPO_Quotation_Release_Qualifier="A", IPO_Price=int(u.price[i]), **stock)
    b.add("H", release, PATCH_TRADING_ACTION, Trading_State="Q", Reason="IPOQ", **stock)
    b.add("Q", release + tl.pause_ns - MS, PATCH_CROSS, Shares=int(u.round_lot[i]) * 500, Cross_Type="H", **stock)
    b.add("H", release + tl.pause_ns, PATCH_TRADING_ACTION, Trading_State="T", **stock)


def _direct_listing(b: _Builder, u: Universe, i: int, tl: Timeline) -> None:
    """Two price-discovery updates (O) before the open: not yet eligible, then eligible to open."""
    p = int(u.price[i])
    band = max(TICK, (p // 10) // TICK * TICK)
    times = [tl.market_open - 2 * tl.pause_ns, tl.market_open - tl.pause_ns]
    b.add("O", times, Stock_Locate=i + 1, Stock=bytes(u.names[i]), Open_Eligibility_Status=["N", "Y"],
          Minimum_Allowable_Price=p - 2 * band, Maximum_Allowable_Price=p + 2 * band, Near_Execution_Price=p,
          Near_Execution_Time=[t + tl.pause_ns for t in times], Lower_Price_Range_Collar=p - band,
          Upper_Price_Range_Collar=p + band)


def _luld_pause(b: _Builder, u: Universe, i: int, tl: Timeline) -> None:
    """A limit-up/limit-down pause: paused, its auction collar, the reopening cross, trading again."""
    start = tl.market_fraction(0.4)
    stock = dict(Stock_Locate=i + 1, Stock=bytes(u.names[i]))
    b.add("H", start, PATCH_TRADING_ACTION, Trading_State="P", Reason="LUDP", **stock)
    b.add("J", start + MS, PATCH_COLLAR, Auction_Collar_Extension=0, **stock)
    b.add("Q", start + tl.pause_ns - MS, PATCH_CROSS, Shares=int(u.round_lot[i]) * 2000, Cross_Type="H", **stock)
    b.add("H", start + tl.pause_ns, PATCH_TRADING_ACTION, Trading_State="T", **stock)


def _intraday_notices(b: _Builder, u: Universe, tl: Timeline, draws: Stream) -> None:
    """Reg SHO short-sale restrictions (Y) and retail price improvement interest (N) at random times."""
    n = len(u)
    span = tl.market_close - tl.market_open
    sho = draws.choose(n, max(1, n // 50))
    b.add("Y", np.sort(tl.market_open + draws.below(len(sho), span)), Stock_Locate=sho + 1,
          Stock=[bytes(u.names[i]) for i in sho], Reg_SHO_Action="1")
    active = u.by_rank()[:max(2, n // 2)]
    rpii = active[draws.below(max(2, n // 100), len(active))]
    flags = [b"BSAN"[k:k + 1] for k in draws.below(len(rpii), 4)]
    b.add("N", np.sort(tl.market_open + draws.below(len(rpii), span)), Stock_Locate=rpii + 1,
          Stock=[bytes(u.names[i]) for i in rpii], Interest_Flag=flags)


def _cross_sizes(u: Universe, crossing: np.ndarray, scale: float, draws: Stream) -> np.ndarray:
    """Shares matched in a cross: proportional to activity (a busy stock crosses ~10^5-10^6 shares)."""
    lot = u.round_lot[crossing]
    raw = u.activity[crossing] * 2e7 * scale * (0.5 + draws.unit(len(crossing)))
    return np.maximum(1, np.rint(raw / lot)).astype(np.int64) * lot


def _cross(b: _Builder, u: Universe, crossing: np.ndarray, t: int, kind: str, scale: float, draws: Stream):
    b.add("Q", t + US * np.arange(len(crossing)), PATCH_CROSS, Shares=_cross_sizes(u, crossing, scale, draws),
          Stock_Locate=crossing + 1, Stock=[bytes(u.names[i]) for i in crossing], Cross_Type=kind)


def _noii(b: _Builder, u: Universe, crossing: np.ndarray, at: int, before: tuple, kind: str, after: int,
          draws: Stream) -> None:
    """Imbalance updates ahead of a cross, one round per time in ``before`` (seconds); prices are patched."""
    size = _cross_sizes(u, crossing, 1.0 if kind == "O" else 2.0, draws)
    lot = u.round_lot[crossing]
    for k, seconds in enumerate(before):
        t = at - seconds * SECOND
        if t <= after:
            continue
        progress = (k + 1) / len(before)
        paired = (size * (0.5 + 0.5 * progress)) // lot * lot
        imbalance = (paired * 0.3 * draws.unit(len(crossing))).astype(np.int64) // lot * lot
        side = np.where(draws.unit(len(crossing)) < 0.5, "B", "S")
        direction = np.where(imbalance == 0, "N", side)
        pvi = [b"L1 2"[j:j + 1] for j in np.minimum(draws.below(len(crossing), 5), 3)]
        b.add("I", t + 200 * np.arange(len(crossing)), PATCH_NOII, Paired_Shares=paired, Imbalance_Shares=imbalance,
              Imbalance_Direction=list(direction), Stock_Locate=crossing + 1,
              Stock=[bytes(u.names[i]) for i in crossing], Cross_Type=kind, Price_Variation_Indicator=pvi)
