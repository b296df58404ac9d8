"""The XDP steering program (xdp/feed_steer.bpf.c) and its loader (appliance.ring.steer).

Three layers, cheapest first:
- the header compiled for the host against the Python mirror (clang only);
- the parser, frame by frame, through BPF_PROG_TEST_RUN (root; attaches to nothing);
- attach, stale, foreign, busy and SIGKILL behaviour on a veth pair inside a network namespace the test
  creates and deletes (root + netns).  The loader runs in ``ip netns exec`` subprocesses.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from appliance.decode import frames
from appliance.errors import UserError
from appliance.ring import steer

GROUP = 0xE9360C01                      # 233.54.12.1
PORT = 26400
OTHER_GROUP = 0xE9360C02
needs_clang = pytest.mark.skipif(shutil.which("clang") is None or shutil.which("make") is None,
                                 reason="needs clang and make")


def udp_frame(group=GROUP, port=PORT, vlans=(), ihl=5, frag_off=0, proto=17, payload=b"ITCH" * 4,
              tot_len=None, version=4) -> bytes:
    """A hand-built Ethernet (+ VLAN tags) / IPv4 / UDP frame; every field overridable to break it."""
    options = b"\x01" * (4 * ihl - 20) if ihl > 5 else b""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    length = tot_len if tot_len is not None else 4 * max(ihl, 5) + len(udp)
    ip = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, length, 1, frag_off, 16, proto, 0,
                     socket.inet_aton("10.1.2.3"), group.to_bytes(4, "big")) + options
    l2 = bytes.fromhex("01005e360c01 020000000001")
    for tpid, vid in vlans:
        l2 += struct.pack("!HH", tpid, vid)
    return l2 + b"\x08\x00" + ip + udp


# --- header vs Python mirror ----------------------------------------------------------------------------
HEADER_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include "feed_steer.h"
#define P(name, x) printf("%s %llu\n", name, (unsigned long long)(x))
int main(void) {
    P("feed_key.size", sizeof(struct feed_key));
    P("feed_key.group", offsetof(struct feed_key, group));
    P("feed_key.port", offsetof(struct feed_key, port));
    P("feed_key.pad", offsetof(struct feed_key, pad));
    P("feed_index_t.size", sizeof(feed_index_t));
    P("steer_meta.size", sizeof(struct steer_meta));
    P("steer_meta.rx_ns", offsetof(struct steer_meta, rx_ns));
    P("steer_meta.magic", offsetof(struct steer_meta, magic));
    P("steer_meta.rx_queue", offsetof(struct steer_meta, rx_queue));
/*CONSTANTS*/
    return 0;
}
"""
CONSTANTS = ["STEER_META_MAGIC", "FEEDS_MAX_ENTRIES", "FEED_MAX_TAGS", "ETH_P_QINQ_OLD", "XSKS_MAX_ENTRIES", "STEER_PASS_NOT_FEED",
             "STEER_PASS_MALFORMED", "STEER_PASS_FRAGMENT", "STEER_REDIRECT", "STEER_NO_SOCKET",
             "STEER_META_FAILED", "STEER_REDIRECT_FAILED", "STEER_NCOUNTERS"]


@needs_clang
def test_header_matches_python_mirror(tmp_path):
    source = tmp_path / "probe.c"
    source.write_text(HEADER_PROBE.replace("/*CONSTANTS*/", "\n".join(f'    P("{n}", {n});' for n in CONSTANTS)))
    subprocess.run(["clang", "-Wall", "-I", str(steer.XDP_DIR), "-o", str(tmp_path / "probe"), str(source)],
                   check=True)
    c_side = dict(line.split() for line in subprocess.check_output([str(tmp_path / "probe")], text=True).splitlines())
    c_side = {name: int(value) for name, value in c_side.items()}

    py_side = {"feed_index_t.size": 4}
    for struct_name, dtype in (("feed_key", steer.FEED_KEY), ("steer_meta", steer.STEER_META)):
        py_side[f"{struct_name}.size"] = dtype.itemsize
        py_side.update({f"{struct_name}.{field}": dtype.fields[field][1] for field in dtype.names})
    py_side.update({name: getattr(steer, name) for name in CONSTANTS})
    assert py_side == c_side
    assert (steer.FEED_MAX_TAGS, steer.ETH_P_QINQ_OLD) == (frames.MAX_TAGS, frames.ETH_P_QINQ_OLD)
    assert steer.META_SIZE == c_side["steer_meta.size"]
    counters = sorted((c_side[n], n) for n in CONSTANTS if n.startswith("STEER_") and n not in
                      ("STEER_META_MAGIC", "STEER_NCOUNTERS"))
    assert steer.COUNTER_NAMES == [n.removeprefix("STEER_").lower() for _, n in counters]
    assert [i for i, _ in counters] == list(range(steer.STEER_NCOUNTERS))


@needs_clang
def test_ensure_built_rebuilds_only_when_sources_change(tmp_path, monkeypatch):
    xdp = tmp_path / "xdp"
    xdp.mkdir()
    for name in ("feed_steer.bpf.c", "feed_steer.h", "Makefile"):
        shutil.copy2(steer.XDP_DIR / name, xdp / name)
    obj = xdp / "build" / "feed_steer.bpf.o"
    monkeypatch.setattr(steer, "XDP_DIR", xdp)
    monkeypatch.setattr(steer, "OBJECT_PATH", obj)
    monkeypatch.setattr(steer, "SOURCES", (xdp / "feed_steer.bpf.c", xdp / "feed_steer.h"))

    assert steer.ensure_built() == obj and obj.exists()
    built = obj.stat().st_mtime_ns
    steer.ensure_built()
    assert obj.stat().st_mtime_ns == built                      # up to date: make not run
    later = built / 1e9 + 5
    os.utime(xdp / "feed_steer.h", (later, later))             # the header changed
    steer.ensure_built()
    assert obj.stat().st_mtime_ns != built
    (xdp / "feed_steer.bpf.c").write_text("this is not C\n")
    with pytest.raises(UserError, match=r"^building the XDP program failed \(make -C .*\): "):
        steer.ensure_built()


def test_installed_package_uses_the_object_bootstrap_installed(tmp_path, monkeypatch):
    # A wheel installed into a venv has no xdp/ beside it: ensure_built finds INSTALLED_OBJECT, or says where it looked.
    missing = tmp_path / "site-packages" / "xdp"
    monkeypatch.setattr(steer, "OBJECT_PATH", missing / "build" / "feed_steer.bpf.o")
    monkeypatch.setattr(steer, "SOURCES", (missing / "feed_steer.bpf.c", missing / "feed_steer.h"))
    installed = tmp_path / "share" / "appliance" / "feed_steer.bpf.o"
    monkeypatch.setattr(steer, "INSTALLED_OBJECT", installed)
    with pytest.raises(UserError, match=r"^the XDP program is not built: neither .* nor .*share/appliance/feed_steer"):
        steer.ensure_built()
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"\x7fELF")
    assert steer.ensure_built() == installed


def test_missing_interface_is_one_sentence():
    with pytest.raises(UserError) as caught:
        with steer.SteerProgram("nosuch-if0", [(GROUP, PORT)]):
            pass
    message = str(caught.value)
    assert "'nosuch-if0'" in message and "\n" not in message and message.count(". ") == 0


# --- the parser, through BPF_PROG_TEST_RUN --------------------------------------------------------------
@pytest.fixture
def loaded():
    obj = steer._Object(steer.ensure_built())
    try:
        obj.fill_feeds([(GROUP, PORT), (GROUP, PORT + 1)])
        yield obj
    finally:
        obj.close()


CASES = [  # (name, frame, action without a socket, counter)
    ("subscribed", udp_frame(), "no_socket"),
    ("second port", udp_frame(port=PORT + 1), "no_socket"),
    ("other port", udp_frame(port=PORT + 2), "pass_not_feed"),
    ("other group", udp_frame(group=OTHER_GROUP), "pass_not_feed"),
    ("802.1Q", udp_frame(vlans=[(0x8100, 5)]), "no_socket"),
    ("QinQ 802.1ad+802.1Q", udp_frame(vlans=[(0x88A8, 7), (0x8100, 5)]), "no_socket"),
    ("three tags", udp_frame(vlans=[(0x88A8, 7), (0x8100, 5), (0x8100, 6)]), "no_socket"),
    ("five tags", udp_frame(vlans=[(0x88A8, 7), (0x9100, 5), (0x8100, 6), (0x8100, 6), (0x8100, 6)]),
     "pass_not_feed"),
    ("IPv4 options", udp_frame(ihl=7), "no_socket"),
    ("IHL 15", udp_frame(ihl=15), "no_socket"),
    ("IHL 4", udp_frame(ihl=4), "pass_malformed"),
    ("version 6 in an IPv4 ethertype", udp_frame(version=6), "pass_malformed"),
    ("total length shorter than IP+UDP", udp_frame(tot_len=24), "pass_malformed"),
    ("TCP", udp_frame(proto=6), "pass_not_feed"),
    ("first fragment (MF)", udp_frame(frag_off=0x2000), "pass_fragment"),
    ("later fragment", udp_frame(frag_off=0x0010), "pass_fragment"),
    ("ARP", bytes.fromhex("ffffffffffff 020000000001 0806") + bytes(28), "pass_not_feed"),
    ("truncated in UDP", udp_frame()[:14 + 20 + 4], "pass_malformed"),
    ("truncated in IPv4", udp_frame()[:14 + 10], "pass_malformed"),
    ("truncated in VLAN", udp_frame(vlans=[(0x8100, 5)])[:16], "pass_malformed"),
    ("options beyond the frame", udp_frame(ihl=15)[:14 + 60], "pass_malformed"),
]


@pytest.mark.root
@pytest.mark.parametrize("name,frame,counter", CASES, ids=[c[0] for c in CASES])
def test_parser_outcomes(loaded, name, frame, counter):
    action, out = loaded.test_run(frame)
    assert action == steer.XDP_PASS
    assert out == frame                                           # no metadata when not redirected
    counts = loaded.counters()
    assert counts == {n: int(n == counter) for n in steer.COUNTER_NAMES}


@pytest.mark.root
def test_every_truncation_of_a_feed_frame_is_passed_and_counted(loaded):
    frame = udp_frame(vlans=[(0x8100, 5)], ihl=6)
    header_end = 14 + 4 + 24 + 8
    for size in range(14, header_end):                           # test_run refuses frames under ETH_HLEN
        action, _ = loaded.test_run(frame[:size])
        assert action == steer.XDP_PASS, size
    counts = loaded.counters()
    assert counts["pass_malformed"] == header_end - 14 and sum(counts.values()) == header_end - 14


@pytest.mark.root
def test_redirect_stamps_metadata(loaded):
    # An AF_XDP socket need not be bound to sit in the XSKMAP; test_run only reports the verdict.
    with socket.socket(44, socket.SOCK_RAW, 0) as xsk:         # AF_XDP
        loaded.set_socket(0, xsk.fileno())
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        action, out = loaded.test_run(udp_frame(vlans=[(0x8100, 5)]))
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        loaded.clear_socket(0)
        loaded.clear_socket(0)                                   # idempotent
        again, _ = loaded.test_run(udp_frame())
    assert action == steer.XDP_REDIRECT and again == steer.XDP_PASS
    meta = np.frombuffer(out[:steer.META_SIZE], steer.STEER_META)[0]
    assert out[steer.META_SIZE:] == udp_frame(vlans=[(0x8100, 5)])
    assert meta["magic"] == steer.STEER_META_MAGIC and meta["rx_queue"] == 0
    assert before <= meta["rx_ns"] <= after
    assert loaded.counters() == {**dict.fromkeys(steer.COUNTER_NAMES, 0), "redirect": 1, "no_socket": 1}
    with pytest.raises(UserError, match="rx queue 64 is beyond"):
        loaded.set_socket(64, 0)


# --- attach, on a veth pair in a private namespace -----------------------------------------------------
DRIVER = r"""
import json, socket, sys, time
from appliance.errors import UserError
from appliance.ring.steer import SteerProgram
action, args = sys.argv[1], json.loads(sys.argv[2])
def report(**fields):
    print(json.dumps(fields), flush=True)
try:
    with SteerProgram(args["ifname"], [tuple(f) for f in args["feeds"]], args["mode"]) as prog:
        info = dict(mode_attached=prog.mode_attached, replaced_stale=prog.replaced_stale, prog_id=prog.prog_id,
                    native_error=prog.native_error)
        if action == "send":
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            tx.bind((args["peer"], 0))
            for frame in args["frames"]:
                tx.send(bytes.fromhex(frame))
            deadline = time.monotonic() + 3
            while True:
                counters = prog.counters()
                if all(counters[k] >= v for k, v in args["expect"].items()) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            time.sleep(0.05)                     # let a stray extra frame show up, if any
            info["counters"] = prog.counters()
        report(**info)
        if action == "hold":
            time.sleep(60)
except UserError as err:
    report(error=type(err).__name__, message=str(err), exit_code=err.exit_code)
"""


class Namespace:
    """A network namespace with veth pair st0 (XDP side, 2 rx queues) <-> st1 (sender)."""

    def __init__(self, rx_queues=2):
        self.name = f"steer-test-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            for cmd in (["link", "add", "st0", "numrxqueues", str(rx_queues), "numtxqueues", "2", "type", "veth",
                         "peer", "name", "st1", "numrxqueues", "2", "numtxqueues", "2"],
                        ["link", "set", "st0", "up"], ["link", "set", "st1", "up"]):
                subprocess.run(["ip", "-n", self.name, *cmd], check=True)
        except BaseException:
            self.delete()
            raise

    def run(self, *cmd, check=True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              check=check, timeout=20)

    def driver(self, action: str, mode="auto", feeds=((GROUP, PORT),), **args):
        argv = [sys.executable, "-c", DRIVER, action,
                json.dumps({"ifname": "st0", "peer": "st1", "mode": mode, "feeds": feeds, **args})]
        if action == "hold":
            proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
            return proc, json.loads(proc.stdout.readline())
        done = self.run(*argv)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def xdp(self, ifname="st0") -> dict | None:
        """What `ip -j link show` says is attached: None, or {"mode": ..., "prog": {"name": ..., ...}}."""
        link = json.loads(subprocess.check_output(["ip", "-n", self.name, "-j", "link", "show", "dev", ifname]))
        return link[0].get("xdp")

    def delete(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def ns(request):
    space = Namespace(**getattr(request, "param", {}))
    try:
        yield space
    finally:
        space.delete()


def _send_frames():
    return {
        "frames": [f.hex() for f in (udp_frame(), udp_frame(), udp_frame(port=PORT + 9), udp_frame()[:14 + 12],
                                     udp_frame(vlans=[(0x8100, 3)]))],
        "expect": {"no_socket": 3, "pass_not_feed": 1, "pass_malformed": 1},
    }


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.parametrize("mode,attached", [("auto", "native"), ("generic", "generic")])
def test_attach_and_count_live_frames(ns, mode, attached):
    result = ns.driver("send", mode=mode, **_send_frames())
    assert result["mode_attached"] == attached, result
    counters = result["counters"]
    assert counters["no_socket"] == 3 and counters["pass_malformed"] == 1, counters
    assert counters["pass_not_feed"] >= 1                      # plus whatever the kernel sends (IPv6 ND)
    assert counters["redirect"] == counters["redirect_failed"] == counters["meta_failed"] == 0
    assert ns.xdp() is None                                    # detached on exit


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.parametrize("ns", [{"rx_queues": 1}], indirect=True)
def test_auto_falls_back_to_generic_when_native_is_refused(ns):
    # veth refuses native XDP when its peer has more tx queues (2) than it has rx queues (1).
    result = ns.driver("attach")
    assert result["mode_attached"] == "generic"
    assert "rx queues" in result["native_error"]
    refused = ns.driver("attach", mode="native")
    assert refused["error"] == "UserError" and "in native mode failed" in refused["message"]
    assert ns.xdp() is None


@pytest.mark.root
@pytest.mark.netns
def test_stale_netlink_copy_is_replaced(ns):
    ns.run("ip", "link", "set", "dev", "st0", "xdpgeneric", "obj", str(steer.ensure_built()), "sec", "xdp")
    stale = ns.xdp()
    assert stale and stale["prog"]["name"] == steer.PROG_NAME
    result = ns.driver("attach")
    assert result["mode_attached"] == "native"
    assert f"(id {stale['prog']['id']}, generic mode)" in result["replaced_stale"]
    assert ns.xdp() is None


@pytest.mark.root
@pytest.mark.netns
def test_foreign_program_is_refused_and_left_alone(ns, tmp_path):
    source = tmp_path / "not_ours.bpf.c"
    source.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                      'SEC("xdp") int not_ours(struct xdp_md *ctx) { return XDP_PASS; }\n'
                      'char _license[] SEC("license") = "GPL";\n')
    obj = tmp_path / "not_ours.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(source), "-o", str(obj)], check=True)
    ns.run("ip", "link", "set", "dev", "st0", "xdpgeneric", "obj", str(obj), "sec", "xdp")
    result = ns.driver("attach")
    assert result["error"] == "UserError", result
    assert "not_ours" in result["message"] and "never touches" in result["message"]
    assert ns.xdp()["prog"]["name"] == "not_ours"


@pytest.mark.root
@pytest.mark.netns
def test_live_capture_blocks_a_second_one_and_sigkill_detaches(ns):
    holder, first = ns.driver("hold")
    assert first["mode_attached"] == "native"
    attached = ns.xdp()
    assert attached["prog"]["id"] == first["prog_id"]
    second = ns.driver("attach")
    assert second.get("error") == "UserError" and "another capture is running on st0" in second["message"]
    assert ns.xdp()["prog"]["id"] == first["prog_id"]          # the live one was not disturbed

    os.kill(holder.pid, signal.SIGKILL)                        # ip netns exec execs python: same pid
    holder.wait(timeout=5)
    deadline = time.monotonic() + 2
    while ns.xdp() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ns.xdp() is None
    third = ns.driver("attach")
    assert third["mode_attached"] == "native" and third["replaced_stale"] is None
