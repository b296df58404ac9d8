"""Order books per stock locate and side, the trade tape and top-of-book rows, from decoded ITCH messages.

Every message goes through ``appliance.itch.layout.decode`` (the one table) and is read by field name.
Prices are integer ticks (1/10,000 $).  Tape rows and bbo rows carry the locate; symbols are attached when
the outputs are written (``symbol`` = the name for the locate at output time).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from appliance.itch.layout import decode

BOOK_TYPES = frozenset("AFECXDU")
NO_QUOTE = (0, 0, 0, 0)


@dataclass
class Order:
    locate: int
    side: str          # "B" or "S"
    price: int
    shares: int        # remaining


@dataclass
class Instrument:
    bids: dict = field(default_factory=dict)     # price -> aggregate shares
    asks: dict = field(default_factory=dict)
    volume: int = 0
    notional: int = 0
    trades: int = 0
    cross_volume: int = 0

    def level(self, side: str) -> dict:
        return self.bids if side == "B" else self.asks

    def top(self) -> tuple[int, int, int, int]:
        bid_price = max(self.bids) if self.bids else 0
        ask_price = min(self.asks) if self.asks else 0
        return bid_price, self.bids.get(bid_price, 0), ask_price, self.asks.get(ask_price, 0)


class Book:
    def __init__(self):
        self.orders: dict[int, Order] = {}
        self.instruments: dict[int, Instrument] = {}
        self.names: dict[int, str] = {}               # locate -> stock, latest R wins
        self.last_top: dict[int, tuple] = {}
        self.bbo: list[tuple] = []                   # (timestamp, locate, bid_price, bid_size, ask_price, ask_size)
        self.tape: list[tuple] = []                  # (timestamp, locate, kind, side, shares, price, match)
        self.unknown_order_refs = 0
        self.rejected_adds = 0
        self.broken_match_numbers: list[int] = []

    def instrument(self, locate: int) -> Instrument:
        return self.instruments.setdefault(locate, Instrument())

    def apply(self, message: bytes) -> dict:
        m = decode(message)
        kind = m["Message Type"]
        ts = m["Timestamp"]
        touched = None                                # the locate whose book this message may change
        if kind in ("A", "F"):
            touched = m["Stock Locate"]
            self._add(m["Order Reference Number"], touched, m["Buy/Sell Indicator"], m["Price"], m["Shares"])
        elif kind == "E":
            touched = self._execute(ts, m["Order Reference Number"], m["Executed Shares"], m["Match Number"],
                                    price=None, printable=True, kind="E")
        elif kind == "C":
            touched = self._execute(ts, m["Order Reference Number"], m["Executed Shares"], m["Match Number"],
                                    price=m["Execution Price"], printable=m["Printable"] == "Y", kind="C")
        elif kind == "X":
            order = self._live(m["Order Reference Number"])
            if order is not None:
                touched = order.locate
                self._reduce(m["Order Reference Number"], order, min(m["Cancelled Shares"], order.shares))
        elif kind == "D":
            order = self._live(m["Order Reference Number"])
            if order is not None:
                touched = order.locate
                self._reduce(m["Order Reference Number"], order, order.shares)
        elif kind == "U":
            touched = self._replace(m)
        elif kind == "P":
            if m["Shares"] > 0:
                self._trade(ts, m["Stock Locate"], "P", m["Buy/Sell Indicator"], m["Shares"], m["Price"],
                            m["Match Number"])
        elif kind == "Q":
            if m["Shares"] > 0:
                self.instrument(m["Stock Locate"]).cross_volume += m["Shares"]
                self.tape.append((ts, m["Stock Locate"], "Q", "", m["Shares"], m["Cross Price"], m["Match Number"]))
        elif kind == "B":
            self.broken_match_numbers.append(m["Match Number"])
        elif kind == "R":
            self.names[m["Stock Locate"]] = m["Stock"]
        if kind in BOOK_TYPES and touched is not None:
            self._emit_top(ts, touched)
        return m

    def _live(self, ref: int) -> Order | None:
        order = self.orders.get(ref)
        if order is None:
            self.unknown_order_refs += 1
        return order

    def _add(self, ref: int, locate: int, side: str, price: int, shares: int) -> None:
        if ref == 0 or side not in ("B", "S") or shares == 0 or ref in self.orders:
            self.rejected_adds += 1
            return
        self.orders[ref] = Order(locate, side, price, shares)
        levels = self.instrument(locate).level(side)
        levels[price] = levels.get(price, 0) + shares

    def _reduce(self, ref: int, order: Order, shares: int) -> None:
        """Take ``shares`` (<= remaining) off the order and its price level; forget the order at zero."""
        levels = self.instrument(order.locate).level(order.side)
        levels[order.price] -= shares
        if levels[order.price] == 0:
            del levels[order.price]
        order.shares -= shares
        if order.shares == 0:
            del self.orders[ref]

    def _execute(self, ts, ref, executed, match, price, printable, kind) -> int | None:
        order = self._live(ref)
        if order is None:
            return None
        taken = min(executed, order.shares)
        side, locate = order.side, order.locate
        trade_price = order.price if price is None else price
        if taken > 0:
            self._reduce(ref, order, taken)
            if printable:
                self._trade(ts, locate, kind, side, taken, trade_price, match)
        return locate

    def _replace(self, m: dict) -> int | None:
        original = self._live(m["Original Order Reference Number"])
        if original is None:
            return None
        self._reduce(m["Original Order Reference Number"], original, original.shares)
        self._add(m["New Order Reference Number"], original.locate, original.side, m["Price"], m["Shares"])
        return original.locate

    def _trade(self, ts, locate, kind, side, shares, price, match) -> None:
        instrument = self.instrument(locate)
        instrument.volume += shares
        instrument.notional += shares * price
        instrument.trades += 1
        self.tape.append((ts, locate, kind, side, shares, price, match))

    def _emit_top(self, ts: int, locate: int) -> None:
        top = self.instrument(locate).top()
        if top != self.last_top.get(locate, NO_QUOTE):
            self.last_top[locate] = top
            self.bbo.append((ts, locate) + top)
