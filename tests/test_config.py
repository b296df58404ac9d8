"""The service's config file: ``appliance config check``, every key checked, errors naming key and line."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.service import config as C
from appliance.service.toml_lines import key_lines
from appliance.service.toml_out import dumps

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "provisioning" / "appliance.toml.example"
APPLIANCE = [sys.executable, "-m", "appliance"]

MINIMAL = """\
[capture]
interface = "eth1"

[feeds.totalview]
lines = [{name = "A", group = "233.54.12.111", port = 26477}]
"""


def check(tmp_path, text: str, capsys) -> tuple[int, str, str]:
    """Run ``appliance config check`` on ``text`` in this process: (exit status, stdout, stderr)."""
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    code = main(["config", "check", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


# -- the example and the effective config ------------------------------------------------------------------
def test_example_is_valid_and_round_trips():
    config = C.load(str(EXAMPLE))
    printed = C.render(config)
    assert tomllib.loads(printed) == C.as_dict(config)
    assert C.parse(printed, config.source) == config
    assert config.capture.interface == "eth1" and config.capture.hot_cpu == 2
    assert [line.address for line in config.feeds[0].lines] == [(0xE9360C6F, 26477), (0xE931C46F, 26477)]
    assert config.recording.retain_bytes == 500 << 30 and config.recording.retain_days == 30.0


def test_example_names_every_key_with_its_default():
    """Each key the config takes is in the example, and where the example gives a default it is the code's."""
    example = tomllib.loads(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    for section, cls in (("capture", C.Capture), ("recording", C.Recording), ("metrics", C.Metrics),
                         ("service", C.Service), ("outputs", C.CsvOutput), ("outputs", C.NatsOutput)):
        for f in dataclasses.fields(cls):
            if "check" in f.metadata:
                assert f"\n{f.name} = " in text or f"\n# {f.name} = " in text, f"{section}.{f.name} not in example"
    defaults = C.as_dict(C.parse(MINIMAL))
    no_default = {"interface", "hot_cpu", "output_cpus", "retain_bytes", "retain_days"}
    for section in ("capture", "recording", "metrics", "service"):
        for name, value in example[section].items():
            if name not in no_default:
                assert defaults[section][name] == value, f"{section}.{name}: example {value!r}, default " \
                                                         f"{defaults[section][name]!r}"


def test_cli_prints_the_effective_config(tmp_path):
    """As a subprocess: exit 0, TOML on stdout that says the same config; $APPLIANCE_CONFIG names the file."""
    path = tmp_path / "site.toml"
    path.write_text(MINIMAL)
    env = dict(os.environ, APPLIANCE_CONFIG=str(path))
    done = subprocess.run(APPLIANCE + ["config", "check"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert tomllib.loads(done.stdout) == C.as_dict(C.load(str(path)))


def test_defaults_are_filled():
    config = C.parse(MINIMAL)
    assert config.outputs == (C.CsvOutput(name="tables", directory="/var/lib/appliance/tables"),)
    assert config.metrics == C.Metrics(listen="127.0.0.1:9108", feed_stale_seconds=5.0)
    assert config.service == C.Service(state_directory="/var/lib/appliance", watchdog=True)
    assert config.capture.engine == "xdp" and config.capture.queues == "all" and config.capture.hot_cpu is None
    assert config.capture.ring_rows == 1 << 20 and config.capture.hot_rt == 0 and config.capture.idle == "poll"
    assert config.recording.rotate_size == 1 << 30 and config.recording.retain_bytes is None
    printed = tomllib.loads(C.render(config))
    assert printed["outputs"] == {"tables": {"kind": "csv", "directory": "/var/lib/appliance/tables",
                                             "messages": False, "packets": False}}
    assert "hot_cpu" not in printed["capture"] and printed["capture"]["queues"] == "all"
    assert printed["recording"]["rotate_size"] == "1G"


def test_values_are_converted_and_frozen():
    config = C.parse(MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\nqueues = [1, 0]\n'
                                     'output_cpus = [3]\nblock_size = 2097152') +
                     '[recording]\nrotate_size = "512m"\nretain_days = 0.5\n')
    assert config.capture.queues == (1, 0) and config.capture.output_cpus == (3,)
    assert config.capture.block_size == 2 << 20 and config.recording.rotate_size == 512 << 20
    assert config.recording.retain_days == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.capture.engine = "tpacket"


def test_constants_repeated_for_speed_match_their_sources():
    from appliance import args
    from appliance.cold.rows import MIN_FRAME_BYTES, MIN_ROWS
    from appliance.decode import state

    assert args.RING_ROWS_MIN == MIN_ROWS and args.RECORD_RING_MIN == MIN_FRAME_BYTES
    assert (C.MAX_LINES, C.DEFAULT_ORDER_CAPACITY, C.DEFAULT_LEVEL_POOL) == \
        (state.MAX_LINES, state.DEFAULT_ORDER_CAPACITY, state.DEFAULT_LEVEL_POOL)


# -- errors: one sentence, exit 2, the key and its line ----------------------------------------------------
FEED_B = '{name = "B", group = "233.49.196.111", port = 26477}'
ERRORS = {
    "unknown key": (MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\n\nengin = "xdp"'), 4,
                    "capture.engin is not a known key"),
    "unknown section": (MINIMAL + "\n[metric]\nlisten = \"127.0.0.1:1\"\n", 7, "metric is not a known section"),
    "unknown key in a line": (MINIMAL.replace("lines = [{", "lines = [\n  " + FEED_B + ",\n  {")
                              .replace("port = 26477}]", "prot = 26477}]"), 7,
                              "feeds.totalview.lines[1].prot is not a known key"),
    "unknown dotted key": ("capture.interface = \"eth1\"\ncapture.hot-cpu = 2\n" + MINIMAL.split("\n", 2)[2], 2,
                           "capture.hot-cpu is not a known key"),
    "wrong type": (MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\nhot_rt = "high"'), 3,
                   "capture.hot_rt must be a whole number from 0 to 99"),
    "bool is not a number": (MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\nblocks = true'), 3,
                             "capture.blocks must be a whole number"),
    "bad multicast group": (MINIMAL.replace("233.54.12.111", "10.1.2.3"), 5,
                            "feeds.totalview.lines[0].group must be an IPv4 multicast group"),
    "bad port": (MINIMAL.replace("26477", "70000"), 5, "feeds.totalview.lines[0].port must be a UDP port from 1 to 65535 (not 70000)"),
    "duplicate line name": (MINIMAL.replace("}]", "},\n" + FEED_B.replace('"B"', '"A"') + "]"), 6,
                            "feeds.totalview.lines[1].name 'A' names a second line"),
    "group:port twice": (MINIMAL + "\n[feeds.other]\nlines = [{name = \"A\", group = \"233.54.12.111\", "
                                   "port = 26477}]\n", 8,
                         "feeds.other.lines[0].group 233.54.12.111:26477 is also feeds.totalview.lines[0]"),
    "unknown output kind": (MINIMAL + "\n[outputs.bus]\nkind = \"kafka\"\n", 8,
                            "outputs.bus.kind is 'kafka', not a known kind of output (known: csv, nats)"),
    "bad nats server": (MINIMAL + "\n[outputs.bus]\nkind = \"nats\"\nservers = [\"http://x:4222\"]\n", 9,
                        "outputs.bus.servers must be a list of server URLs like \"nats://127.0.0.1:4222\": "
                        "'http://x:4222' is not one"),
    "nats replicas": (MINIMAL + "\n[outputs.bus]\nkind = \"nats\"\nreplicas = 7\n", 9,
                      "outputs.bus.replicas must be a whole number from 1 to 5"),
    "nats nice": (MINIMAL + "\n[outputs.bus]\nkind = \"nats\"\nnice = -5\n", 9,
                  "outputs.bus.nice must be a whole number from 0 to 19"),
    "output without kind": (MINIMAL + "\n[outputs.bus]\ndirectory = \"/srv\"\n", 7, "outputs.bus needs the key 'kind'"),
    "bad size": (MINIMAL + "\n[recording]\nrotate_size = \"1X\"\n", 8,
                 "recording.rotate_size must be a positive size such as \"512M\" or \"2G\" (not '1X')"),
    "relative path": (MINIMAL + "\n[outputs.tables]\nkind = \"csv\"\ndirectory = \"tables\"\n", 9,
                      "outputs.tables.directory must be an absolute path"),
    "zero duration": (MINIMAL + "\n[metrics]\nfeed_stale_seconds = 0\n", 8,
                      "metrics.feed_stale_seconds must be a positive number of seconds"),
    "missing interface": (MINIMAL.replace('interface = "eth1"', 'engine = "xdp"'), 1,
                          "capture needs the key 'interface'"),
    "ring rows": (MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\nring_rows = 5000'), 3,
                  "capture.ring_rows must be a power of two from 4096"),
    "queues": (MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\nqueues = [0, -1]'), 3,
               'capture.queues must be "all" or a list of distinct queue numbers'),
    "hot cpu shared": (MINIMAL.replace('interface = "eth1"', 'interface = "eth1"\nhot_cpu = 1\n'
                                       'output_cpus = [0, 1]'), 4, "capture.output_cpus must not include hot_cpu"),
    "listen": (MINIMAL + "\n[metrics]\nlisten = \"[::1]\"\n", 8, "metrics.listen must be HOST:PORT"),
    "no feeds": ("[capture]\ninterface = \"eth1\"\n", None, "feeds needs at least one feed"),
    "empty lines": (MINIMAL.replace(MINIMAL.splitlines()[-1], "lines = []"), 5,
                    "feeds.totalview.lines must be a non-empty list of lines"),
    "feed without lines": (MINIMAL.replace(MINIMAL.splitlines()[-1], ""), 4, "feeds.totalview needs its lines"),
    "syntax": (MINIMAL.replace('"eth1"', '"eth1'), 2, "is not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_config_is_one_sentence_naming_key_and_line(tmp_path, capsys, case):
    text, line, words = ERRORS[case]
    code, out, err = check(tmp_path, text, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("appliance: "), err
    assert words in err, err
    if line is not None:
        assert f"appliance.toml, line {line}:" in err or f"(at line {line}," in err, err


def test_bad_config_through_the_real_command_line(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text(ERRORS["unknown output kind"][0])
    done = subprocess.run(APPLIANCE + ["config", "check", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert f"{path}, line 8: outputs.bus.kind is 'kafka'" in done.stderr
    missing = subprocess.run(APPLIANCE + ["config", "check", str(tmp_path / "none.toml")], capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr == f"appliance: no config file {tmp_path / 'none.toml'} (write one from " \
                             "provisioning/appliance.toml.example, or name another with FILE or $APPLIANCE_CONFIG)\n"


def test_unreadable_and_binary_files_are_one_sentence(tmp_path, capsys):
    path = tmp_path / "appliance.toml"
    path.write_bytes(b"[capture]\ninterface = \"\xff\"\n")
    assert main(["config", "check", str(path)]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path)]) == 2        # a directory
    assert "cannot read the config file" in capsys.readouterr().err


def test_the_error_names_the_line_of_an_array_of_tables_element():
    text = MINIMAL.split("[feeds")[0] + """\
# lines as an array of tables
[[feeds.totalview.lines]]
name = "A"
group = "233.54.12.111"
port = 26477

[[feeds.totalview.lines]]
name = "B"
group = "233.54.12.112"
port = 0
"""
    with pytest.raises(C.ConfigError, match=r"line 13: feeds\.totalview\.lines\[1\]\.port must be a UDP port"):
        C.parse(text, "appliance.toml")


# -- the line scanner and the TOML writer ------------------------------------------------------------------
TRICKY = '''\
title = """
[capture]
interface = "not a key" # nor this
"""
"quoted key" = 'literal # not a comment'
a . "b.c" . d = 1   # dotted, spaced, quoted
ends = """ two quotes end it: ""\"""
[capture]   # a header with a comment
queues = [  # an array over lines
    0,
    # a comment inside
    1,
]
line = { name = "A", inner = { port = 7 } }
[[x]]
[x.y]
k = 1
[[x]]
k = 2
[x.y]
k = 3
'''


def test_key_lines_follow_headers_dotted_keys_strings_and_arrays_of_tables():
    assert tomllib.loads(TRICKY)["ends"] == ' two quotes end it: ""'
    lines = key_lines(TRICKY)
    assert lines[("title",)] == 1 and lines[("quoted key",)] == 5
    assert lines[("a", "b.c", "d")] == 6 and lines[("ends",)] == 7
    assert lines[("capture",)] == 8 and ("capture", "interface") not in lines
    assert lines[("capture", "queues")] == 9
    assert lines[("capture", "queues", 0)] == 10 and lines[("capture", "queues", 1)] == 12
    assert lines[("capture", "line", "inner", "port")] == 14
    assert lines[("x", 0)] == 15 and lines[("x", 0, "y", "k")] == 17
    assert lines[("x", 1, "k")] == 19 and lines[("x", 1, "y", "k")] == 21


def test_toml_writer_round_trips_awkward_values():
    document = {
        "plain": {"s": 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f é', "n": -3, "f": 0.1,
                  "big": 2**62, "yes": True, "list": [1, 2], "empty": [], "rows": [{"a": 1}, {"b": "x"}]},
        "odd keys": {"a b": 1, "ü": 2, "": 3},
        "only": {"tables": {"x": {"k": False}}},
        "blank": {},
    }
    assert tomllib.loads(dumps(document)) == document
