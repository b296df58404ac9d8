"""The appliance's config file, ``/etc/appliance/appliance.toml``: read it, check every key, fill the defaults.

``load(path)`` returns a frozen :class:`Config`, or raises :class:`ConfigError`: one sentence naming the file,
the line and the key (exit 2).  Unknown sections and keys are errors, so a typo never silently leaves a
setting at its default.  ``provisioning/appliance.toml.example`` documents every key.

Each section is a frozen dataclass whose fields are its keys: a field made with :func:`.values.key` carries the check
(provisioning's convention: a function returning why a value is wrong, or ``None``), an optional conversion
from the TOML value (``"1G"`` -> 1073741824) and the way back for printing.  ``[capture]`` takes the values
``appliance capture`` takes, with the choices and limits of :mod:`appliance.args`.  Output consumers are
``[outputs.NAME]`` tables with a ``kind``; :data:`OUTPUT_KINDS` maps each kind to its dataclass, so a new
publisher is a new dataclass and one entry there.

What this does not check, because it depends on the host and not on the file: that the interface exists,
that the CPUs are ones the service may run on, that RT throttling is on, that directories are writable.
Those are for ``appliance serve`` to check when it starts (``service.serve.check_host``).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass

from appliance import args as A
from appliance.errors import UserError
from appliance.service import values as V
from appliance.service.toml_lines import key_lines, line_of
from appliance.service.toml_out import dumps, string
from provisioning.limits import is_bool, one_of

DEFAULT_PATH = "/etc/appliance/appliance.toml"
ENV_VAR = "APPLIANCE_CONFIG"
STATE_DIRECTORY = "/var/lib/appliance"
# appliance.decode.state's MAX_LINES, DEFAULT_ORDER_CAPACITY and DEFAULT_LEVEL_POOL: repeated here because that
# module imports numpy (a third of config check's time); tests/test_config.py pins them equal.
MAX_LINES = 16
DEFAULT_ORDER_CAPACITY = 6_000_000
DEFAULT_LEVEL_POOL = 1 << 24


class ConfigError(UserError):
    """The config file is missing, unreadable, not TOML, or holds a key or value that is not allowed (exit 2)."""


# -- the sections ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Capture:
    """``[capture]``: what ``appliance capture`` takes on its command line (see its --help for each)."""

    interface: str = V.key(V.iface)
    engine: str = V.key(one_of(*A.ENGINES), "xdp")
    queues: str | tuple[int, ...] = V.key(V.queues, "all", V.as_tuple)
    hot_cpu: int | None = V.key(V.cpu, None)
    output_cpus: tuple[int, ...] | None = V.key(V.cpus, None, V.as_tuple)
    hot_rt: int = V.key(V.int_from(0, A.HOT_RT_MAX), 0)
    idle: str = V.key(one_of(*A.IDLE_MODES), "poll")
    nap_us: int = V.key(V.positive, 200)
    prefault: bool = V.key(is_bool, True)
    ring_rows: int = V.key(V.ring_rows, 1 << 20)
    order_capacity: int = V.key(V.positive, DEFAULT_ORDER_CAPACITY)
    level_pool: int = V.key(V.positive, DEFAULT_LEVEL_POOL)
    xdp_mode: str = V.key(one_of(*A.XDP_MODES), "auto")
    xdp_copy: str = V.key(one_of(*A.XDP_COPY_MODES), "auto")
    frames: int | None = V.key(V.power_of_two, None)
    hugepages: bool = V.key(is_bool, True)
    tpacket_version: int = V.key(one_of(*A.TPACKET_VERSIONS), 3)
    block_size: int = V.size_key(1 << 20)
    blocks: int = V.key(V.positive, 64)
    retire_ms: int = V.key(V.positive, 2)


@dataclass(frozen=True, kw_only=True)
class Line:
    """One multicast line of a feed (A or B)."""

    name: str = V.key(V.name)
    group: str = V.key(V.group)
    port: int = V.key(V.port)

    @property
    def address(self) -> tuple[int, int]:
        """(group as int, port): what ``appliance capture --feed`` makes of GROUP:PORT."""
        return int(ipaddress.IPv4Address(self.group)), self.port


@dataclass(frozen=True, kw_only=True)
class Feed:
    """``[feeds.NAME]``: a feed and its lines."""

    name: str
    lines: tuple[Line, ...]


@dataclass(frozen=True, kw_only=True)
class Recording:
    """``[recording]``: the feed frames as pcap files, rotated, and kept within a budget."""

    enabled: bool = V.key(is_bool, True)
    directory: str = V.key(V.absolute, f"{STATE_DIRECTORY}/recordings")
    rotate_size: int = V.size_key(1 << 30)
    rotate_seconds: int = V.key(V.positive, 3600)
    snaplen: int = V.key(V.int_from(1, 65535), 65535)
    retain_bytes: int | None = V.size_key(None)
    retain_days: float | None = V.key(V.days, None, float)
    free_floor: int = V.size_key(1 << 30)


@dataclass(frozen=True, kw_only=True)
class CsvOutput:
    """``kind = "csv"``: the table files (bbo, trades, vwap; messages and packets on request), one set per
    session, named by session and date."""

    name: str
    kind: str = "csv"
    directory: str = V.key(V.absolute, f"{STATE_DIRECTORY}/tables")
    messages: bool = V.key(is_bool, False)
    packets: bool = V.key(is_bool, False)


@dataclass(frozen=True, kw_only=True)
class NatsOutput:
    """``kind = "nats"``: top of book, trades, VWAP windows and feed status published to NATS JetStream by a
    publisher process (``appliance.publish``), subjects ``md.<feed>.<symbol>.<kind>``."""

    name: str
    kind: str = "nats"
    servers: tuple = V.key(V.nats_urls, ("nats://127.0.0.1:4222",), V.as_tuple, list)
    feed: str | None = V.key(V.name, None)            # the subjects' feed token; default: the only feed's name
    encoding: str = V.key(one_of("binary", "json"), "binary")
    buffer_records: int = V.key(V.positive, 1 << 16)  # trades, windows and status waiting for the server
    ack_window: int = V.key(V.positive, 16384)        # records in flight before waiting for acknowledgements
    max_age: float = V.key(V.seconds, 86400.0, float)  # the stream's retention by age
    max_bytes: int = V.key(V.int_from(-1), -1)        # the stream's retention by size; -1: no limit
    replicas: int = V.key(V.int_from(1, 5), 1)        # JetStream replicas (3 on a 3-node cluster)
    nice: int = V.key(V.int_from(0, 19), 10)          # the publisher process's nice value: below receive


OUTPUT_KINDS: dict[str, type] = {"csv": CsvOutput, "nats": NatsOutput}
DEFAULT_OUTPUTS = (CsvOutput(name="tables"),)


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """``[metrics]``: the Prometheus and health endpoints (/metrics, /healthz, /readyz)."""

    listen: str = V.key(V.listen, "127.0.0.1:9108")
    feed_stale_seconds: float = V.key(V.seconds, 5.0, float)


@dataclass(frozen=True, kw_only=True)
class Service:
    """``[service]``: the process itself."""

    state_directory: str = V.key(V.absolute, STATE_DIRECTORY)
    watchdog: bool = V.key(is_bool, True)
    handover_socket: str | None = V.key(V.absolute, None)      # where a successor asks for the feed (either engine)


@dataclass(frozen=True, kw_only=True)
class Config:
    source: str
    capture: Capture
    feeds: tuple[Feed, ...]
    recording: Recording
    outputs: tuple = DEFAULT_OUTPUTS
    metrics: Metrics = Metrics()
    service: Service = Service()


SECTIONS = {"capture": Capture, "feeds": Feed, "recording": Recording, "outputs": None, "metrics": Metrics,
            "service": Service}


# -- reading -----------------------------------------------------------------------------------------------
def path_from(given: str | None) -> str:
    """The file to read: ``given``, else ``$APPLIANCE_CONFIG``, else :data:`DEFAULT_PATH`."""
    return given or os.environ.get(ENV_VAR) or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    path = path_from(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"no config file {path} (write one from provisioning/appliance.toml.example, or name "
                          f"another with FILE or ${ENV_VAR})") from None
    except OSError as err:
        raise ConfigError(f"cannot read the config file {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start} is not valid UTF-8)") from None
    return parse(text, path)


def parse(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source} is not valid TOML: {err}") from None
    return _Reader(text, source).config(data)


class _Reader:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self._lines: dict | None = None

    def error(self, path: tuple, problem: str) -> ConfigError:
        """One sentence: the file, the line of ``path`` (or of the table around it), the key, the problem."""
        if self._lines is None:
            self._lines = key_lines(self.text)
        line = line_of(self._lines, path)
        where = f"{self.source}, line {line}" if line else self.source
        return ConfigError(f"{where}: {dotted(path)} {problem}" if path else f"{where}: {problem}")

    def config(self, data: dict) -> Config:
        self.table((), data, set(SECTIONS))
        if "capture" not in data:
            raise self.error((), "has no [capture] section (it needs at least the interface to capture on)")
        capture = self.section(("capture",), data["capture"], Capture)
        self.placement(capture)
        return Config(source=self.source, capture=capture, feeds=self.feeds(data.get("feeds")),
                      recording=self.section(("recording",), data.get("recording", {}), Recording),
                      outputs=self.outputs(data.get("outputs")),
                      metrics=self.section(("metrics",), data.get("metrics", {}), Metrics),
                      service=self.section(("service",), data.get("service", {}), Service))

    def table(self, path: tuple, table, known: set[str]) -> None:
        """``table`` is a table and holds only ``known`` keys."""
        if not isinstance(table, dict):
            raise self.error(path, "must be a table")
        for name in table:
            if name not in known:
                listed = ", ".join(sorted(known)) or "none"
                what = "section" if not path else "key"
                where = dotted(path) if path else "the file"
                raise self.error(path + (name,), f"is not a known {what}: {where} takes {listed}")

    def section(self, path: tuple, table, cls, **given):
        """Check ``table`` against the keys of dataclass ``cls``, fill defaults and build it."""
        keys = {f.name: f for f in dataclasses.fields(cls) if "check" in f.metadata}
        self.table(path, table, set(keys) | ({"kind"} if "kind" in given else set()))
        values = dict(given)
        for name, f in keys.items():
            if name not in table:
                if f.default is dataclasses.MISSING:
                    raise self.error(path, f"needs the key {name!r}")
                continue
            problem = f.metadata["check"](table[name])
            if problem:
                raise self.error(path + (name,), problem)
            convert = f.metadata["convert"]
            values[name] = convert(table[name]) if convert else table[name]
        return cls(**values)

    def placement(self, c: Capture) -> None:
        # The static half of capture's check_placement (the rest needs the host, so serve does it).
        if c.output_cpus is not None and c.hot_cpu in c.output_cpus:
            raise self.error(("capture", "output_cpus"), "must not include hot_cpu: the output work would "
                                                         "share the hot core")
        if c.hot_rt and c.idle == "spin":
            raise self.error(("capture", "hot_rt"), 'does not go with idle = "spin": a real-time thread that '
                                                    "never sleeps is throttled by the kernel (use poll or nap)")

    def feeds(self, feeds) -> tuple[Feed, ...]:
        if not feeds:
            raise self.error(("feeds",), "needs at least one feed: [feeds.NAME] with lines = [{name = \"A\", "
                                         "group = \"233.54.12.111\", port = 26477}]")
        self.table(("feeds",), feeds, set(feeds))
        made, seen = [], {}                                  # (group, port) -> the path of the line with it
        for name, table in feeds.items():
            path = ("feeds", name)
            self.check_name(path, name, "feed")
            self.table(path, table, {"lines"})
            lines = table.get("lines")
            example = '[{name = "A", group = "233.54.12.111", port = 26477}, ...]'
            if "lines" not in table:
                raise self.error(path, f"needs its lines: lines = {example}")
            if not isinstance(lines, list) or not lines:
                raise self.error(path + ("lines",), f"must be a non-empty list of lines such as {example}")
            made.append(Feed(name=name, lines=tuple(self.line(path + ("lines", i), line, seen)
                                                    for i, line in enumerate(lines))))
            names = [line.name for line in made[-1].lines]
            for i, line_name in enumerate(names):
                if line_name in names[:i]:
                    raise self.error(path + ("lines", i, "name"), f"{line_name!r} names a second line of feed "
                                                                   f"{name!r}: line names must differ")
        if len(seen) > MAX_LINES:
            raise self.error(("feeds",), f"hold {len(seen)} lines; a capture takes at most {MAX_LINES}")
        return tuple(made)

    def line(self, path: tuple, table, seen: dict) -> Line:
        line = self.section(path, table, Line)
        other = seen.setdefault((line.group, line.port), path)
        if other != path:
            raise self.error(path + ("group",), f"{line.group}:{line.port} is also {dotted(other)}: a group and "
                                                "port may be one line only")
        return line

    def outputs(self, outputs) -> tuple:
        if outputs is None or outputs == {}:
            return DEFAULT_OUTPUTS
        self.table(("outputs",), outputs, set(outputs))
        made, directories = [], {}
        for name, table in outputs.items():
            path = ("outputs", name)
            self.check_name(path, name, "output")
            self.table(path, table, set(table))
            kind = table.get("kind")
            if kind is None:
                raise self.error(path, f"needs the key 'kind' (one of {', '.join(sorted(OUTPUT_KINDS))})")
            if kind not in OUTPUT_KINDS:
                raise self.error(path + ("kind",), f"is {kind!r}, not a known kind of output (known: "
                                                   f"{', '.join(sorted(OUTPUT_KINDS))})")
            made.append(self.section(path, table, OUTPUT_KINDS[kind], name=name, kind=kind))
            directory = getattr(made[-1], "directory", None)
            if directory is None:
                continue
            if directory in directories:
                raise self.error(path + ("directory",), f"is also {directories[directory]}'s directory: two "
                                                        "outputs would write over each other's files")
            directories[directory] = f"outputs.{name}"
        return tuple(made)

    def check_name(self, path: tuple, name: str, what: str) -> None:
        if V.name(name):
            raise self.error(path, f"is not a usable {what} name: use 1 to 32 letters, digits, '_', '.' or '-'")


def dotted(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if re.match(r"^[A-Za-z0-9_-]+$", part) else repr(part))
    return out


# -- printing ----------------------------------------------------------------------------------------------
def _section_dict(obj) -> dict:
    out = {}
    if "kind" in {f.name for f in dataclasses.fields(obj)}:
        out["kind"] = obj.kind
    for f in dataclasses.fields(obj):
        if "check" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        show = f.metadata["show"]
        out[f.name] = show(value) if show else value
    return out


def as_dict(config: Config) -> dict:
    """The effective config as the TOML document that says it (lists, not tuples; sizes as "1G")."""
    def plain(v):
        return [plain(item) for item in v] if isinstance(v, (list, tuple)) else v
    capture = {k: plain(v) for k, v in _section_dict(config.capture).items()}
    return {
        "capture": capture,
        "feeds": {feed.name: {"lines": [_section_dict(line) for line in feed.lines]} for feed in config.feeds},
        "recording": _section_dict(config.recording),
        "outputs": {out.name: _section_dict(out) for out in config.outputs},
        "metrics": _section_dict(config.metrics),
        "service": _section_dict(config.service),
    }


def render(config: Config) -> str:
    """The effective config as TOML, every default filled in; ``parse(render(c)) == c`` but for ``source``."""
    return f"# effective config of {string(config.source)}: every key, defaults filled in\n" + dumps(as_dict(config))
