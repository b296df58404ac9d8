"""Load the XDP program that steers the feed (xdp/feed_steer.bpf.c) and attach it, in-process, via libbpf.

``SteerProgram(ifname, feeds)`` is a context manager: on entry it builds the object if needed, loads it,
fills the ``feeds`` map with the subscribed (group, port) pairs and attaches the program to the interface;
on exit it detaches and unloads, always.  The capture engine binds its AF_XDP sockets into the ``xsks`` map
with :meth:`SteerProgram.set_socket` and reads the per-CPU outcome counters with :meth:`counters`.

Attach choices:

- **BPF link, not netlink.**  The program is attached with ``bpf_link_create(BPF_XDP)``.  The link lives as
  long as its file descriptor, so a capture that dies, even by SIGKILL, detaches by itself and never
  leaves a half-configured NIC behind.  Nothing is pinned: no bpffs is needed (none is mounted here, and
  ``ip netns exec`` remounts /sys), and every fd stays in this process.
- **Stale copies are ours to clean, foreign programs never.**  Before attaching, ``bpf_xdp_query`` says what
  the interface carries.  A program named ``feed_steer`` attached the old netlink way (``xdp-loader``,
  ``ip link set xdp``, a build before links) is stale: nobody owns it, so it is detached (with
  ``XDP_FLAGS_REPLACE`` on its fd, so only that very program goes) and ``replaced_stale`` says so.  If a
  live BPF link holds it, another capture is running and entry fails.  Any other program belongs to
  someone else; entry fails with its name and the interface is left as it was.
- **"auto" mode** tries native (driver) XDP and falls back to generic (skb) XDP; ``mode_attached`` says
  which one took.

Why no kernel BTF is needed: the program uses no CO-RE relocations, no kfuncs and no BTF-typed helpers, so
libbpf never opens /sys/kernel/btf/vmlinux.  The object's own BTF (clang -g) is what libbpf 1.x reads, in
user space, to find the SEC(".maps") definitions; if a kernel refuses to load that BTF, libbpf warns and
loads the maps and program without it.

libbpf's log goes through a callback that keeps recent warnings in memory instead of printing them; when a
libbpf call fails, the most telling line (the verifier's complaint, for a rejected program) joins the error.  Errors become one sentence (``UserError``);
a missing privilege becomes :class:`NeedsRoot` (exit code 77).

One module rather than a bindings module plus a loader: the ctypes table is only used here.
"""
from __future__ import annotations

import collections
import ctypes
import errno
import logging
import os
import socket
import subprocess
import sys
from ctypes import POINTER, Structure, byref, c_char, c_char_p, c_int, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p
from pathlib import Path

import numpy as np

from appliance.errors import NeedsPrivilege, UserError

log = logging.getLogger(__name__)

XDP_DIR = Path(__file__).resolve().parents[2] / "xdp"
OBJECT_PATH = XDP_DIR / "build" / "feed_steer.bpf.o"
SOURCES = (XDP_DIR / "feed_steer.bpf.c", XDP_DIR / "feed_steer.h")
# An installed package (provisioning/bootstrap.sh: a wheel in the /opt/appliance venv) has no xdp/ beside it;
# bootstrap builds the object and puts it here, under the venv's prefix.
INSTALLED_OBJECT = Path(sys.prefix) / "share" / "appliance" / "feed_steer.bpf.o"
PROG_NAME = "feed_steer"          # the SEC("xdp") function; bpf_prog_info.name tells ours from others

# --- mirror of xdp/feed_steer.h (tests/test_steer.py compiles the header and compares) -------------
# struct feed_key { __u32 group; __u16 port; __u16 pad; }   group and port in network order
FEED_KEY = np.dtype([("group", ">u4"), ("port", ">u2"), ("pad", "<u2")])
# struct steer_meta { __u64 rx_ns; __u32 magic; __u32 rx_queue; }   just before the frame's first byte
STEER_META = np.dtype([("rx_ns", "<u8"), ("magic", "<u4"), ("rx_queue", "<u4")])
META_SIZE = STEER_META.itemsize
STEER_META_MAGIC = 0x53544D31
FEEDS_MAX_ENTRIES = 256
FEED_MAX_TAGS = 4                 # the acceptance policy's MAX_TAGS (decode/frames.py); the test checks all three
ETH_P_QINQ_OLD = 0x9100
XSKS_MAX_ENTRIES = 64

STEER_PASS_NOT_FEED = 0
STEER_PASS_MALFORMED = 1
STEER_PASS_FRAGMENT = 2
STEER_REDIRECT = 3
STEER_NO_SOCKET = 4
STEER_META_FAILED = 5
STEER_REDIRECT_FAILED = 6
STEER_NCOUNTERS = 7
COUNTER_NAMES = ["pass_not_feed", "pass_malformed", "pass_fragment", "redirect", "no_socket",
                 "meta_failed", "redirect_failed"]

# --- kernel UAPI constants (linux/if_link.h, linux/bpf.h), kernel names verbatim --------------------
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
BPF_XDP = 37                      # enum bpf_attach_type
BPF_LINK_TYPE_XDP = 6
BPF_ANY = 0
XDP_PASS, XDP_REDIRECT = 2, 4
LIBBPF_WARN, LIBBPF_INFO = 0, 1
_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
# What a failed native attach usually means; link_create does not return the driver's extack text.
_NATIVE_HINTS = {
    errno.EOPNOTSUPP: "the driver has no native XDP",
    errno.ENOSPC: "the driver has no room for it; on veth this end needs at least as many rx queues as "
                  "the peer has tx queues",
    errno.ERANGE: "the MTU is too large for native XDP without multi-buffer support",
}


NeedsRoot = NeedsPrivilege


def ensure_built() -> Path:
    """Run ``make -C xdp`` when the object is missing or older than its sources; return its path.

    Without the sources (an installed package), the object bootstrap installed (``INSTALLED_OBJECT``)."""
    if not SOURCES[0].exists() and not OBJECT_PATH.exists() and INSTALLED_OBJECT.exists():
        return INSTALLED_OBJECT
    if OBJECT_PATH.exists():
        built = OBJECT_PATH.stat().st_mtime
        if all(not src.exists() or src.stat().st_mtime <= built for src in SOURCES):
            return OBJECT_PATH
    if not SOURCES[0].exists():
        raise UserError(f"the XDP program is not built: neither {OBJECT_PATH} nor {INSTALLED_OBJECT} exists "
                        f"(install with provisioning/bootstrap.sh)")
    try:
        made = subprocess.run(["make", "-C", str(XDP_DIR)], capture_output=True, text=True)
    except FileNotFoundError as err:
        raise UserError("building the XDP program needs make and clang (run 'sh provisioning/setup.sh deps')") from err
    if made.returncode != 0:
        lines = (made.stderr or made.stdout).strip().splitlines() or ["no output"]
        raise UserError(f"building the XDP program failed (make -C {XDP_DIR}): {lines[0]}")
    return OBJECT_PATH


# --- libbpf through ctypes --------------------------------------------------------------------------
class _XdpQueryOpts(Structure):       # struct bpf_xdp_query_opts (libbpf.h)
    _fields_ = [("sz", c_size_t), ("prog_id", c_uint32), ("drv_prog_id", c_uint32),
                ("hw_prog_id", c_uint32), ("skb_prog_id", c_uint32), ("attach_mode", c_uint8)]


class _XdpAttachOpts(Structure):      # struct bpf_xdp_attach_opts (libbpf.h)
    _fields_ = [("sz", c_size_t), ("old_prog_fd", c_int)]


class _LinkCreateOpts(Structure):     # struct bpf_link_create_opts (bpf.h), up to the field we set;
    _fields_ = [("sz", c_size_t), ("flags", c_uint32)]   # libbpf reads nothing beyond .sz


class _TestRunOpts(Structure):        # struct bpf_test_run_opts (bpf.h)
    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p), ("data_size_in", c_uint32),
                ("data_size_out", c_uint32), ("ctx_in", c_void_p), ("ctx_out", c_void_p),
                ("ctx_size_in", c_uint32), ("ctx_size_out", c_uint32), ("retval", c_uint32),
                ("repeat", c_int), ("duration", c_uint32), ("flags", c_uint32), ("cpu", c_uint32),
                ("batch_size", c_uint32)]


class _ProgInfo(Structure):           # struct bpf_prog_info (linux/bpf.h), the prefix up to .name
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("tag", c_uint8 * 8), ("jited_prog_len", c_uint32),
                ("xlated_prog_len", c_uint32), ("jited_prog_insns", c_uint64), ("xlated_prog_insns", c_uint64),
                ("load_time", c_uint64), ("created_by_uid", c_uint32), ("nr_map_ids", c_uint32),
                ("map_ids", c_uint64), ("name", c_char * 16)]


class _LinkInfo(Structure):           # struct bpf_link_info (linux/bpf.h): type, id, prog_id, union.xdp
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("prog_id", c_uint32), ("_pad", c_uint32),
                ("xdp_ifindex", c_uint32)]


_PROTOTYPES = {
    "libbpf_set_print": (c_void_p, [c_void_p]),
    "libbpf_num_possible_cpus": (c_int, []),
    "libbpf_strerror": (c_int, [c_int, c_char_p, c_size_t]),
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_map_fd_by_name": (c_int, [c_void_p, c_char_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_link_create": (c_int, [c_int, c_int, c_int, c_void_p]),
    "bpf_link_detach": (c_int, [c_int]),
    "bpf_link_get_next_id": (c_int, [c_uint32, POINTER(c_uint32)]),
    "bpf_link_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
    "bpf_xdp_query": (c_int, [c_int, c_int, c_void_p]),
    "bpf_xdp_detach": (c_int, [c_int, c_uint32, c_void_p]),
    "bpf_prog_test_run_opts": (c_int, [c_int, c_void_p]),
}
_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)   # (level, fmt, va_list)
_messages: collections.deque[str] = collections.deque(maxlen=64)
_print_buf = ctypes.create_string_buffer(1 << 20)
_lib = None


def _on_libbpf_print(level: int, fmt: bytes, args: int) -> int:
    # Only warnings and info are kept (debug output is large and only useful with a debugger at hand).
    # A verifier log arrives as one message, so the buffer is large; it is reused, and libbpf calls
    # this only from the thread that called into it.
    if level <= LIBBPF_INFO:
        _libc.vsnprintf(_print_buf, len(_print_buf), fmt, args)   # x86-64 va_list is an array: a pointer
        _messages.append(_print_buf.value.decode(errors="replace").strip())
    return 0


_print_callback = _PRINT_FN(_on_libbpf_print)   # kept referenced for as long as libbpf may call it
_libc = ctypes.CDLL(None)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]


def _libbpf():
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as err:
            raise UserError("libbpf.so.1 is missing (install Debian's libbpf1 or run provisioning/setup.sh)") from err
        for name, (restype, argtypes) in _PROTOTYPES.items():
            func = getattr(lib, name)
            func.restype, func.argtypes = restype, argtypes
        lib.libbpf_set_print(ctypes.cast(_print_callback, c_void_p))
        _lib = lib
    return _lib


def _fail(code: int, what: str) -> UserError:
    """A libbpf error (negative errno) as one sentence, with libbpf's last warning when there is one."""
    code = abs(code)
    if code in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
        return NeedsRoot(f"{what} needs root (CAP_BPF and CAP_NET_ADMIN): {os.strerror(code)}")
    if code == errno.EPERM:
        return NeedsRoot(f"{what} was refused: {os.strerror(code)} (missing CAP_BPF or CAP_NET_ADMIN?)")
    text = os.strerror(code)
    if code >= 4000:                                  # libbpf's own codes (LIBBPF_ERRNO__*)
        buf = ctypes.create_string_buffer(256)
        _libbpf().libbpf_strerror(code, buf, len(buf))
        text = buf.value.decode(errors="replace")
    detail = _libbpf_reason()
    return UserError(f"{what} failed: {text}" + (f" ({detail})" if detail else ""))


def _libbpf_reason() -> str:
    """The most telling line libbpf logged: the verifier's complaint when there is a load log."""
    if _messages:
        log.debug("libbpf said:\n%s", "\n".join(_messages))
    for message in reversed(_messages):
        if "-- BEGIN PROG LOAD LOG --" in message:
            lines = message.split("-- BEGIN PROG LOAD LOG --", 1)[1].split("-- END PROG LOAD LOG --")[0]
            reasons = [line.strip() for line in lines.splitlines() if line.strip()
                       and not line.lstrip().startswith((";", "processed", "libbpf:")) and not line[:1].isdigit()]
            if reasons:
                return "verifier: " + "; ".join(reasons[-2:])
    for message in reversed(_messages):
        if "failed to load object" not in message:
            return message
    return ""


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise _fail(ret, what)
    _messages.clear()                 # what libbpf said so far is no longer news for the next failure
    return ret


def _prog_info(prog_fd: int) -> _ProgInfo:
    info, size = _ProgInfo(), c_uint32(ctypes.sizeof(_ProgInfo))
    _check(_libbpf().bpf_obj_get_info_by_fd(prog_fd, byref(info), byref(size)), "reading an XDP program's info")
    return info


def _prog_name(prog_id: int) -> str:
    fd = _libbpf().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return f"<gone: {os.strerror(-fd)}>"
    try:
        return _prog_info(fd).name.decode(errors="replace")
    finally:
        os.close(fd)


def _link_holding(prog_id: int) -> int | None:
    """The id of a live XDP BPF link that holds program prog_id, if any (links are system-wide)."""
    lib, link_id, next_id = _libbpf(), 0, c_uint32()
    while lib.bpf_link_get_next_id(link_id, byref(next_id)) == 0:
        link_id = next_id.value
        fd = lib.bpf_link_get_fd_by_id(link_id)
        if fd < 0:
            continue                           # went away while we walked
        try:
            info, size = _LinkInfo(), c_uint32(ctypes.sizeof(_LinkInfo))
            if lib.bpf_obj_get_info_by_fd(fd, byref(info), byref(size)) == 0 \
                    and info.type == BPF_LINK_TYPE_XDP and info.prog_id == prog_id:
                return link_id
        finally:
            os.close(fd)
    return None


def _queue(queue: int) -> int:
    if not 0 <= queue < XSKS_MAX_ENTRIES:
        raise UserError(f"rx queue {queue} is beyond the {XSKS_MAX_ENTRIES} queues the XDP program can steer")
    return queue


class _Object:
    """The loaded bpf_object: program and map fds; close() frees it (and the maps with it)."""

    def __init__(self, path: Path):
        lib = _libbpf()
        _messages.clear()
        obj = lib.bpf_object__open_file(str(path).encode(), None)
        if not obj:
            raise _fail(ctypes.get_errno() or errno.EINVAL, f"opening {path}")
        self._obj = obj
        self._own_fds: list[int] = []          # the object closes its own fds
        try:
            _check(lib.bpf_object__load(obj), f"loading XDP program {PROG_NAME} from {path}")
            prog = lib.bpf_object__find_program_by_name(obj, PROG_NAME.encode())
            if not prog:
                raise UserError(f"{path} has no program named {PROG_NAME} (stale build? run 'make -C xdp clean')")
            self.prog_fd = lib.bpf_program__fd(prog)
            self.ncpus = _check(lib.libbpf_num_possible_cpus(), "counting possible CPUs")
            self.feeds_fd, self.xsks_fd, self.counters_fd = (
                _check(lib.bpf_object__find_map_fd_by_name(obj, name.encode()), f"finding map {name} in {path}")
                for name in ("feeds", "xsks", "counters"))
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_fds(cls, prog_fd: int, feeds_fd: int, xsks_fd: int, counters_fd: int) -> "_Object":
        """A program and its maps loaded by another process, known by fds it passed (a handover); close()
        closes the fds."""
        self = cls.__new__(cls)
        self._obj = None
        self.prog_fd, self.feeds_fd, self.xsks_fd, self.counters_fd = prog_fd, feeds_fd, xsks_fd, counters_fd
        self._own_fds = [prog_fd, feeds_fd, xsks_fd, counters_fd]
        self.ncpus = _check(_libbpf().libbpf_num_possible_cpus(), "counting possible CPUs")
        return self

    def fds(self) -> list[int]:
        return [self.prog_fd, self.feeds_fd, self.xsks_fd, self.counters_fd]

    def close(self) -> None:
        if self._obj:
            _libbpf().bpf_object__close(self._obj)
            self._obj = None
        for fd in self._own_fds:
            os.close(fd)
        self._own_fds = []

    def fill_feeds(self, feeds: list[tuple[int, int]]) -> None:
        if len(feeds) > FEEDS_MAX_ENTRIES:
            raise UserError(f"{len(feeds)} feeds given; the XDP program steers at most {FEEDS_MAX_ENTRIES}")
        key, value = np.zeros(1, FEED_KEY), np.zeros(1, np.uint32)
        for index, (group, port) in enumerate(feeds):
            if not (0 <= group < 1 << 32 and 0 <= port < 1 << 16):
                raise UserError(f"feed ({group}, {port}) is not an IPv4 address and a UDP port")
            key["group"], key["port"], value[0] = group, port, index
            _check(_libbpf().bpf_map_update_elem(self.feeds_fd, key.ctypes.data, value.ctypes.data, BPF_ANY),
                   "filling the XDP feeds map")

    def set_socket(self, queue: int, xsk_fd: int) -> None:
        key, value = c_uint32(_queue(queue)), c_uint32(xsk_fd)
        _check(_libbpf().bpf_map_update_elem(self.xsks_fd, byref(key), byref(value), BPF_ANY),
               f"binding the AF_XDP socket for rx queue {queue} into the XDP program")

    def clear_socket(self, queue: int) -> None:
        key = c_uint32(_queue(queue))
        ret = _libbpf().bpf_map_delete_elem(self.xsks_fd, byref(key))
        if ret != -errno.ENOENT:
            _check(ret, f"removing the AF_XDP socket for rx queue {queue}")

    def counters(self) -> dict[str, int]:
        # A per-CPU lookup fills one 8-byte slot per possible CPU (not per online CPU).
        values, out = np.zeros(self.ncpus, np.uint64), {}
        for index, name in enumerate(COUNTER_NAMES):
            key = c_uint32(index)
            _check(_libbpf().bpf_map_lookup_elem(self.counters_fd, byref(key), values.ctypes.data),
                   "reading the XDP counters")
            out[name] = int(values.sum())
        return out

    def test_run(self, frame: bytes) -> tuple[int, bytes]:
        """Run the program once on frame with BPF_PROG_TEST_RUN: (XDP action, metadata + frame out)."""
        data_in = ctypes.create_string_buffer(frame, len(frame))
        data_out = ctypes.create_string_buffer(len(frame) + 256)
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(data_in),
                            data_size_in=len(frame), data_out=ctypes.addressof(data_out),
                            data_size_out=len(data_out), repeat=1)
        _check(_libbpf().bpf_prog_test_run_opts(self.prog_fd, byref(opts)), "test-running the XDP program")
        return opts.retval, data_out.raw[:opts.data_size_out]


class SteerProgram:
    """The feed-steering XDP program attached to one interface for the life of a ``with`` block.

    feeds: (group, port) pairs, group as a host-order int (``int(ipaddress.IPv4Address(...))``).
    mode: "auto" (native, else generic), "native" or "generic".
    """

    def __init__(self, ifname: str, feeds: list[tuple[int, int]], mode: str = "auto"):
        if mode not in ("auto", "native", "generic"):
            raise ValueError(f"mode must be 'auto', 'native' or 'generic', not {mode!r}")
        self.ifname, self.feeds, self.mode = ifname, list(feeds), mode
        self.mode_attached: str | None = None
        self.replaced_stale: str | None = None
        self.native_error: str | None = None     # why "auto" fell back to generic
        self._obj: _Object | None = None
        self._link_fd = -1
        self._detach_on_close = True
        self.counter_base: dict[str, int] = {}            # counted before this capture took the program over
        self.counters_frozen: dict[str, int] | None = None  # handed over: the figures at that moment

    # -- lifetime -------------------------------------------------------------------------------------
    def __enter__(self) -> SteerProgram:
        ifindex = self._ifindex()
        path = ensure_built()
        self._obj = _Object(path)
        try:
            self._obj.fill_feeds(self.feeds)
            self._clear_stale(ifindex)
            self._attach(ifindex)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def adopt(cls, ifname: str, feeds: list[tuple[int, int]], mode_attached: str, fds: list[int]) -> SteerProgram:
        """The program another capture attached, taken over with it (``handover_fds`` of that capture, received
        over SCM_RIGHTS): the link, so closing this one detaches it, and the maps, so feeds and counters work."""
        self = cls(ifname, feeds)
        self.mode_attached = mode_attached
        self._link_fd = fds[0]
        self._obj = _Object.from_fds(*fds[1:5])
        return self

    def handover_fds(self) -> list[int]:
        """What a successor needs to own the program: the link's fd, then the program's and the maps'."""
        return [self._link_fd, *self._loaded().fds()]

    def handed_over(self) -> None:
        """A successor holds the link now: closing ours must not detach the program under it."""
        self._detach_on_close = False

    def close(self) -> None:
        """Detach (explicitly, in case a forked child shares the link fd) and free the object -- unless the
        program was handed over: then only our fds close, and it stays attached for the successor."""
        if self._link_fd >= 0:
            if self._detach_on_close:
                _libbpf().bpf_link_detach(self._link_fd)
            os.close(self._link_fd)
            self._link_fd = -1
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def _ifindex(self) -> int:
        try:
            return socket.if_nametoindex(self.ifname)
        except OSError as err:
            raise UserError(f"network interface {self.ifname!r} does not exist here (see 'ip link')") from err

    def _clear_stale(self, ifindex: int) -> None:
        query = _XdpQueryOpts(sz=ctypes.sizeof(_XdpQueryOpts))
        _check(_libbpf().bpf_xdp_query(ifindex, 0, byref(query)), f"querying XDP on {self.ifname}")
        for mode, prog_id, flag in (("native", query.drv_prog_id, XDP_FLAGS_DRV_MODE),
                                    ("generic", query.skb_prog_id, XDP_FLAGS_SKB_MODE),
                                    ("offloaded", query.hw_prog_id, XDP_FLAGS_HW_MODE)):
            if prog_id:
                self._replace(ifindex, mode, prog_id, flag)

    def _replace(self, ifindex: int, mode: str, prog_id: int, flag: int) -> None:
        name = _prog_name(prog_id)
        where = f"{self.ifname} (XDP program {name} id {prog_id}, {mode} mode)"
        if name != PROG_NAME:
            hint = "'xdp-loader unload IF --all'" if name.startswith("xdp_dispatcher") else "'ip link set dev IF xdp off'"
            raise UserError(f"{where} already carries another program, which this appliance never touches: "
                            f"remove it yourself ({hint.replace('IF', self.ifname)}) if it should go")
        link_id = _link_holding(prog_id)
        if link_id is not None:
            raise UserError(f"another capture is running on {self.ifname}: its XDP program (id {prog_id}) is "
                            f"held by BPF link {link_id} of a live process")
        fd = _check(_libbpf().bpf_prog_get_fd_by_id(prog_id), f"opening the stale XDP program on {self.ifname}")
        try:
            ret = _libbpf().bpf_xdp_detach(ifindex, flag, byref(_XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts),
                                                                                old_prog_fd=fd)))
        finally:
            os.close(fd)
        if ret == -errno.EBUSY:
            raise UserError(f"another capture is running on {self.ifname}: its XDP program is held by a BPF link")
        _check(ret, f"detaching the stale copy on {where}")
        self.replaced_stale = f"detached a stale netlink-attached copy of {PROG_NAME} (id {prog_id}, {mode} mode) " \
                              f"from {self.ifname}"
        log.warning("%s", self.replaced_stale)

    def _attach(self, ifindex: int) -> None:
        modes = ["native", "generic"] if self.mode == "auto" else [self.mode]
        for mode in modes:
            opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=_MODE_FLAGS[mode])
            fd = _libbpf().bpf_link_create(self._obj.prog_fd, ifindex, BPF_XDP, byref(opts))
            if fd >= 0:
                self._link_fd, self.mode_attached = fd, mode
                return
            if -fd == errno.EBUSY:
                raise UserError(f"another XDP program was attached to {self.ifname} while this one loaded")
            if mode == "native":
                self.native_error = os.strerror(-fd) + (f": {_NATIVE_HINTS[-fd]}" if -fd in _NATIVE_HINTS else "")
                if len(modes) > 1 and -fd not in (errno.EPERM, errno.EACCES):
                    continue
                if -fd in _NATIVE_HINTS:
                    raise UserError(f"attaching XDP program {PROG_NAME} to {self.ifname} in native mode failed: "
                                    f"{self.native_error}")
            after = f" (native mode failed first: {self.native_error})" if len(modes) > 1 else ""
            raise _fail(fd, f"attaching XDP program {PROG_NAME} to {self.ifname} in {mode} mode{after}")

    # -- use: the maps, through the loaded object ------------------------------------------------------
    @property
    def prog_id(self) -> int:
        return _prog_info(self._loaded().prog_fd).id

    def set_socket(self, queue: int, xsk_fd: int) -> None:
        """Steer feed frames arriving on rx queue `queue` to the AF_XDP socket xsk_fd."""
        self._loaded().set_socket(queue, xsk_fd)

    def clear_socket(self, queue: int) -> None:
        """Stop steering rx queue `queue` (its feed frames then go to the stack); no-op if none was set."""
        self._loaded().clear_socket(queue)

    def counters(self) -> dict[str, int]:
        """Each outcome counter (COUNTER_NAMES), summed over the possible CPUs: this capture's share, from
        when it took the program (``counter_base``) until it handed it over (then frozen)."""
        if self.counters_frozen is not None:
            return dict(self.counters_frozen)
        raw = self._loaded().counters()
        return {k: v - self.counter_base.get(k, 0) for k, v in raw.items()}

    def hand_over_counters(self) -> dict[str, int]:
        """The counters as they stand (the successor counts from them); ours stay as they are from now on."""
        raw = self._loaded().counters()
        self.counters_frozen = {k: v - self.counter_base.get(k, 0) for k, v in raw.items()}
        return raw

    def _loaded(self) -> _Object:
        if self._obj is None:
            raise RuntimeError("SteerProgram is used outside its 'with' block")
        return self._obj
