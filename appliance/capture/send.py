"""Put a capture's frames back on the wire: ``appliance replay INPUT --send IFACE``.

The sending is tcpreplay's (Debian package ``tcpreplay``): a well-kept paced sender over PF_PACKET, so this
module only checks the inputs, inflates gzip to a temporary file, runs it and reads its final statistics.
Each frame goes out as captured (its captured bytes; a frame the capture cut short goes out cut short).
Inputs are recognised by content (``appliance.replay.inputs.detect``): pcap and pcapng go to tcpreplay as they
are; gzip of either is first inflated to a temporary file (tcpreplay reads plain files only), so it needs
that much room in $TMPDIR; a NASDAQ day file holds messages, not frames, and is refused.

Pacing: ``--pps N`` sends N frames a second, ``--topspeed`` as fast as the interface takes them.  With
neither, 10,000 frames a second (``DEFAULT_PPS``): the capture's own timing is not used, because a feed's idle
minutes would make a replay last as long as the session, and a fixed moderate rate is one any receiver here
keeps up with (see shared notes: rates seen).  ``--loop N`` sends the inputs N times (0: until Ctrl-C).
"""
from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.display import printable
from appliance.errors import InputError, RunFailed, UserError
from appliance.pcap import LINKTYPE_ETHERNET

DEFAULT_PPS = 10_000
SYS_CLASS_NET = Path("/sys/class/net")
# Options of the decode path: with --send they would silently do nothing, so they are refused.
DECODE_ONLY = {"out": "--out", "feed": "--feed", "messages": "--messages", "packets": "--packets",
               "order_capacity": "--order-capacity", "level_pool": "--level-pool"}
DECODE_DEFAULTS = {"vwap_window_ms": ("--vwap-window-ms", 1000), "vwap_step_ms": ("--vwap-step-ms", 100)}

# tcpreplay 4.x final statistics, e.g.
#   Actual: 8328 packets (1810895 bytes) sent in 0.416353 seconds
#   Rated: 4349422.2 Bps, 34.79 Mbps, 20002.25 pps
#   Statistics for network device: lab1
#       Successful packets:        8328
#       Failed packets:            0
#       Truncated packets:         0
#       Retried packets (ENOBUFS): 0
#       Retried packets (EAGAIN):  0
_STATS = {
    "bytes": (r"Actual:\s+\d+ packets \((\d+) bytes\)", int),
    "elapsed_seconds": (r"Actual:.* sent in ([\d.]+) seconds", float),
    "mbps": (r"Rated:.*?([\d.]+) Mbps", float),
    "pps": (r"Rated:.*?([\d.]+) pps", float),
    "sent": (r"Successful packets:\s+(\d+)", int),
    "failed": (r"Failed packets:\s+(\d+)", int),
    "truncated": (r"Truncated packets:\s+(\d+)", int),
    "retried_enobufs": (r"Retried packets \(ENOBUFS\):\s+(\d+)", int),
    "retried_eagain": (r"Retried packets \(EAGAIN\):\s+(\d+)", int),
}


class SendError(RunFailed):
    """tcpreplay failed or could not send every frame."""


@dataclass
class SendResult:
    iface: str
    sent: int = 0                    # frames the interface accepted
    failed: int = 0                  # frames the kernel refused (e.g. longer than the MTU)
    truncated: int = 0
    bytes: int = 0
    elapsed_seconds: float = 0.0
    pps: float = 0.0
    mbps: float = 0.0
    retried_enobufs: int = 0
    retried_eagain: int = 0
    interrupted: bool = False        # stopped by Ctrl-C (the normal end of --loop 0)

    def as_dict(self) -> dict:
        return asdict(self)

    def report(self) -> str:
        return (f"sent       {self.sent:,} frames ({self.bytes:,} bytes) out of {self.iface} in "
                f"{self.elapsed_seconds:.3f} s: {self.pps:,.0f} pps, {self.mbps:.2f} Mbps; {self.failed:,} failed, "
                f"{self.truncated:,} truncated, {self.retried_enobufs + self.retried_eagain:,} retried"
                + ("; interrupted" if self.interrupted else ""))


def parse_stats(text: str, iface: str) -> SendResult:
    """tcpreplay's final statistics; a figure it did not print stays 0."""
    result = SendResult(iface)
    for field, (pattern, cast) in _STATS.items():
        found = re.search(pattern, text)
        if found:
            setattr(result, field, cast(found.group(1)))
    return result


def check_iface(iface: str) -> None:
    if "/" in iface or iface in ("", ".", "..") or not (SYS_CLASS_NET / iface).exists():
        raise UserError(f"interface {iface!r} does not exist in this network namespace (a lab's interfaces are "
                        "seen only under 'ip netns exec NS ...')")


def _frames_file(path: str, workdir: Path) -> str:
    """A file tcpreplay can read: the input itself, or its inflated copy in ``workdir``."""
    from appliance.replay.inputs import detect

    src = detect(path)
    if src.kind == "dayfile":
        raise UserError(f"{path} is a NASDAQ day file: it holds ITCH messages, not network frames, so there is "
                        "nothing to send (decode it with --out instead)")
    if src.kind == "pcap" and src.linktype != LINKTYPE_ETHERNET:
        raise UserError(f"{path} holds link type {src.linktype} frames, not Ethernet: they cannot be sent")
    if not src.compressed:
        return path
    plain = workdir / f"{len(list(workdir.iterdir())):03d}-{Path(path).name}.{src.kind}"
    try:
        with gzip.open(path, "rb") as fin, open(plain, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path}: gzip stream cannot be inflated ({err})") from None
    return str(plain)


def send(inputs: list[str], iface: str, *, pps: int | None = None, topspeed: bool = False, loop: int = 1,
         announce=None) -> SendResult:
    """Send every frame of ``inputs`` (in order) out of ``iface`` with tcpreplay; its statistics.

    Raises UserError for a missing interface, tcpreplay or input, a day file, and SendError when tcpreplay
    fails or some frames were refused.  ``announce(text)`` is told what is about to happen.
    """
    tcpreplay = shutil.which("tcpreplay")
    if tcpreplay is None:
        raise UserError("tcpreplay is not installed (apt-get install tcpreplay)")
    check_iface(iface)
    if topspeed and pps:
        raise UserError("--pps and --topspeed do not go together")
    rate = ["--topspeed"] if topspeed else [f"--pps={pps or DEFAULT_PPS}"]
    with tempfile.TemporaryDirectory(prefix="appliance-send-") as tmp:
        files = [_frames_file(p, Path(tmp)) for p in inputs]
        argv = [tcpreplay, f"--intf1={iface}", *rate, f"--loop={loop}", *files]
        if announce:
            announce(f"sending {', '.join(inputs)} out of {iface} "
                     f"{'as fast as it goes' if topspeed else f'at {pps or DEFAULT_PPS:,} pps'}"
                     + (f", {loop} times" if loop > 1 else ", until interrupted" if loop == 0 else ""))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate()
        except KeyboardInterrupt:
            # tcpreplay got the same SIGINT (same process group): it stops and prints its statistics.
            out, err = proc.communicate()
            result = parse_stats(out, iface)
            result.interrupted = True
            return result
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (err + out).splitlines() if ln.strip() and not ln.startswith("Warning")]
        raise SendError(f"tcpreplay failed (exit {proc.returncode}): {lines[-1] if lines else 'no message'}")
    result = parse_stats(out, iface)
    if result.failed:
        why = re.search(r"Unable to send packet: .*?: (.*?) \(errno", err + out)
        raise SendError(f"{iface} refused {result.failed:,} of {result.failed + result.sent:,} frames "
                        f"({'the first: ' + why.group(1) if why else 'see tcpreplay'}); {result.sent:,} sent")
    return result


def run_send(args: argparse.Namespace) -> int:
    """The ``--send`` branch of ``appliance replay``."""
    given = [flag for key, flag in DECODE_ONLY.items() if getattr(args, key, None)]
    given += [flag for key, (flag, default) in DECODE_DEFAULTS.items() if getattr(args, key, default) != default]
    if given:
        what = "is a decode option and does" if len(given) == 1 else "are decode options and do"
        raise UserError(f"{', '.join(given)} {what} not go with --send")
    loop = 1 if args.loop is None else args.loop
    announce = None if args.quiet else (lambda text: print(printable(text), flush=True))     # paths: escaped
    result = send(args.inputs, args.send, pps=args.pps, topspeed=args.topspeed, loop=loop, announce=announce)
    if not args.quiet:
        print(result.report())
    return 130 if result.interrupted and loop else 0
