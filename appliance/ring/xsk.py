"""AF_XDP: the XDP program redirects feed frames into a UMEM we own; we read them where they landed.

Per receive queue, one socket with its own UMEM (``frames`` chunks of ``chunk`` bytes, on 2 MB hugepages when
the kernel has free ones) and four rings shared with the kernel (linux/if_xdp.h).  Each ring is a power-of-two
array of descriptors with a producer and a consumer index (free-running u32), at offsets that
``getsockopt(XDP_MMAP_OFFSETS)`` reports.  We own the fill ring's producer and the rx ring's consumer::

    fill ring   we -> kernel   u64 chunk addresses the kernel may write frames into
    rx ring     kernel -> we   struct xdp_desc { __u64 addr; __u32 len; __u32 options; }
    completion  kernel -> we   (transmit only; the kernel insists it exists)

Every chunk is in exactly one place -- the fill ring, the kernel, the rx ring or our hands -- and the fill ring
holds all of them, so handing a chunk back can never find it full.  We start with every chunk in the fill
ring, and give each one back as soon as its frame has been decoded (held A/B packets are copied to the
session layer's stash first).  When we are slower than the wire the kernel runs out of chunks and counts
``rx_fill_ring_empty_descs`` / ``rx_dropped`` in ``XDP_STATISTICS``: never a silent loss.

The XDP program stamps ``bpf_ktime_get_ns()`` (CLOCK_MONOTONIC) into the metadata area in front of each frame
(``struct steer_meta``, copied along in copy mode); frames without it are stamped here and count as
``frames_without_rx_timestamp`` (no latency sample).  Copy or zero-copy: ``auto`` tries zero-copy and falls
back to copy where the driver cannot (veth, virtio_net 6.1).  ``need_wakeup`` is asked for; when the kernel
raises it on the fill ring, the ring kernel kicks it with a zero-timeout ``poll``.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np

from appliance.errors import UserError
from appliance.ring.atomics import no_wait
from appliance.ring.xsk_rx import X_CHUNK, X_CONS, X_FQ_DESC, X_FQ_FLAGS, X_FQ_MASK, X_FQ_NEXT, X_FQ_PROD, X_MAGIC, \
    X_MONO_TO_REAL, X_RX_CONS, X_RX_DESC, X_RX_MASK, X_RX_PROD, X_SIZE, X_UMEM_SIZE, xsk_rx

log = logging.getLogger(__name__)

AF_XDP = 44
SOL_XDP = 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_TX_RING, XDP_UMEM_REG = 1, 2, 3, 4
XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_STATISTICS, XDP_OPTIONS = 5, 6, 7, 8
XDP_COPY, XDP_ZEROCOPY, XDP_USE_NEED_WAKEUP = 2, 4, 8
XDP_OPTIONS_ZEROCOPY = 1
XDP_PGOFF_RX_RING = 0
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000
MAP_HUGETLB = 0x40000
HUGE_PAGE = 2 << 20
XDP_PACKET_HEADROOM = 256
STATS_FIELDS = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full", "rx_fill_ring_empty_descs",
                "tx_ring_empty_descs")



_libc = ctypes.CDLL(None, use_errno=True)


# -- setup ----------------------------------------------------------------------------------------------
def rx_queue_count(ifname: str) -> int:
    return len(list(Path(f"/sys/class/net/{ifname}/queues").glob("rx-*")))


def _umem(size: int, hugepages: bool) -> tuple[int, mmap.mmap, bool]:
    """The UMEM: a memfd (on 2 MB hugepages when the kernel has free ones) mapped shared, so a successor taking
    the sockets over (capture/handover.py) maps the very pages the kernel writes frames into."""
    tries = [os.MFD_HUGETLB, 0] if hugepages and size % HUGE_PAGE == 0 else [0]
    for huge in tries:
        fd = os.memfd_create("appliance-umem", os.MFD_CLOEXEC | huge)
        try:
            os.ftruncate(fd, size)
            return fd, _map_umem(fd, size), bool(huge)
        except OSError:
            os.close(fd)
            if huge == tries[-1]:
                raise


def _map_umem(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                     mmap.PROT_READ | mmap.PROT_WRITE)


class XskSocket:
    """One AF_XDP socket bound to one rx queue, with its UMEM and rings; a context manager."""

    def __init__(self, ifname: str, queue: int, frames: int = 4096, chunk: int = 4096, ring: int = 4096,
                 copy_mode: str = "auto", hugepages: bool = True, magic: int = 0):
        for name, value in (("frames", frames), ("chunk", chunk), ("ring", ring)):
            if value <= 0 or value & (value - 1):
                raise UserError(f"AF_XDP {name} count {value} must be a power of two")
        self.ifname, self.queue, self.frames, self.chunk, self.ring_size = ifname, queue, frames, chunk, ring
        self.copy_mode, self.want_huge, self.magic = copy_mode, hugepages, magic
        self.sock: socket.socket | None = None
        self.umem_fd = -1
        self.maps: list[mmap.mmap] = []
        self.umem = self.rx_words = self.rx_addr = self.fq_words = self.fq_addr = None
        self.geom = np.zeros(X_SIZE, np.int64)
        self.zerocopy = self.on_hugepages = False
        self.adopted = False
        self.baseline = dict.fromkeys(STATS_FIELDS, 0)   # XDP_STATISTICS counted before this capture had it
        self.frozen: dict[str, int] | None = None        # handed over: the figures at that moment

    @classmethod
    def adopt(cls, ifname: str, queue: int, sock_fd: int, umem_fd: int, frames: int, chunk: int, ring: int,
              magic: int, zerocopy: bool, on_hugepages: bool) -> "XskSocket":
        """A socket another capture bound, taken over with its UMEM (fds received over SCM_RIGHTS): map its
        UMEM and rings, touch nothing yet -- ``resume`` reads where the other left the indices."""
        self = cls(ifname, queue, frames, chunk, ring, magic=magic)
        self.adopted, self.zerocopy, self.on_hugepages = True, zerocopy, on_hugepages
        self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0, fileno=sock_fd)   # (no getsockname on AF_XDP)
        self.umem_fd = umem_fd
        try:
            self.maps.append(_map_umem(umem_fd, frames * chunk))
            self.umem = np.frombuffer(self.maps[-1], np.uint8)
            self._map_rings()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> "XskSocket":
        if self.adopted:
            return self
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        ifindex = socket.if_nametoindex(self.ifname)
        try:
            self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        except OSError as err:
            if err.errno in (errno.EAFNOSUPPORT, errno.EINVAL):
                raise UserError("this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS); use --engine tpacket") \
                    from None
            raise
        size = self.frames * self.chunk
        self.umem_fd, umem_map, self.on_hugepages = _umem(size, self.want_huge)
        self.maps.append(umem_map)
        self.umem = np.frombuffer(umem_map, np.uint8)
        reg = struct.pack("=QQIIII", self.umem.ctypes.data, size, self.chunk, 0, 0, 0)
        try:
            self.sock.setsockopt(SOL_XDP, XDP_UMEM_REG, reg)
        except OSError as err:
            raise UserError(f"the kernel refused a {size >> 20} MiB AF_XDP UMEM: {os.strerror(err.errno)} "
                            "(locked-memory limit? needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)") from None
        for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING):
            self.sock.setsockopt(SOL_XDP, opt, struct.pack("=I", self.ring_size if opt != XDP_UMEM_COMPLETION_RING
                                                           else 64))
        self._map_rings()
        g = self.geom
        # Every chunk into the fill ring before the socket can receive (the ring holds them all).
        fill = min(self.frames, self.ring_size)
        self.fq_addr[g[X_FQ_DESC]:g[X_FQ_DESC] + fill] = np.arange(fill, dtype=np.uint64) * self.chunk
        g[X_FQ_NEXT] = fill
        self.fq_words[g[X_FQ_PROD]] = fill                  # nothing reads it before bind (a system call)
        self._bind(self.sock.fileno(), ifindex)
        opts = struct.unpack("=I", self.sock.getsockopt(SOL_XDP, XDP_OPTIONS, 4))[0]
        self.zerocopy = bool(opts & XDP_OPTIONS_ZEROCOPY)

    def _map_rings(self) -> None:
        """Map the rx and fill rings (and the completion ring the kernel insists on) and note where their indices
        and descriptors are."""
        fd = self.sock.fileno()
        offsets = struct.unpack("=16Q", self.sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
        rx_off, fq_off = offsets[0:4], offsets[8:12]       # producer, consumer, desc, flags
        rx_map = self._map(fd, rx_off[2] + self.ring_size * 16, XDP_PGOFF_RX_RING)
        fq_map = self._map(fd, fq_off[2] + self.ring_size * 8, XDP_UMEM_PGOFF_FILL_RING)
        self._map(fd, offsets[14] + 64 * 8, XDP_UMEM_PGOFF_COMPLETION_RING)
        self.rx_words, self.rx_addr = np.frombuffer(rx_map, np.uint32), np.frombuffer(rx_map, np.uint64)
        self.fq_words, self.fq_addr = np.frombuffer(fq_map, np.uint32), np.frombuffer(fq_map, np.uint64)
        g = self.geom
        g[X_RX_PROD], g[X_RX_CONS], g[X_RX_DESC], g[X_RX_MASK] = rx_off[0] // 4, rx_off[1] // 4, rx_off[2] // 8, \
            self.ring_size - 1
        g[X_FQ_PROD], g[X_FQ_DESC], g[X_FQ_MASK], g[X_FQ_FLAGS] = fq_off[0] // 4, fq_off[2] // 8, \
            self.ring_size - 1, fq_off[3] // 4
        g[X_CHUNK], g[X_UMEM_SIZE], g[X_MAGIC] = self.chunk, self.frames * self.chunk, self.magic

    def positions(self) -> dict[str, int]:
        """Where the indices we own stand in the shared rings (read after the ring kernel stopped)."""
        g = self.geom
        return {"queue": self.queue, "rx_consumer": int(self.rx_words[g[X_RX_CONS]]),
                "fill_producer": int(self.fq_words[g[X_FQ_PROD]])}

    def resume(self, at: dict[str, int]) -> None:
        """An adopted socket: go on from where the previous owner stopped (its last indices are in the shared
        rings; ``at`` is what it said they were, checked)."""
        g = self.geom
        cons, prod = int(self.rx_words[g[X_RX_CONS]]), int(self.fq_words[g[X_FQ_PROD]])
        if (cons, prod) != (at["rx_consumer"], at["fill_producer"]):
            raise UserError(f"{self.ifname} queue {self.queue}: the handed-over rings stand at consumer {cons}, "
                            f"fill {prod}, not where the previous capture said ({at['rx_consumer']}, "
                            f"{at['fill_producer']}); is a third process using them?")
        g[X_CONS], g[X_FQ_NEXT] = cons, prod

    def _map(self, fd: int, length: int, offset: int) -> mmap.mmap:
        m = mmap.mmap(fd, length, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                      mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        self.maps.append(m)
        return m

    def _bind(self, fd: int, ifindex: int) -> None:
        tries = {"auto": (XDP_ZEROCOPY, XDP_COPY), "zerocopy": (XDP_ZEROCOPY,), "copy": (XDP_COPY,)}
        last = 0
        for mode in tries[self.copy_mode]:
            addr = struct.pack("=HHIII", AF_XDP, mode | XDP_USE_NEED_WAKEUP, ifindex, self.queue, 0)
            # A socket on this queue closed a moment ago is released by the kernel after an RCU grace period
            # (EBUSY until then): a capture restarted at once retries for up to a second.
            for _ in range(20):
                if _libc.bind(fd, addr, len(addr)) == 0:
                    return
                last = ctypes.get_errno()
                if last != errno.EBUSY:
                    break
                time.sleep(0.05)
        why = os.strerror(last)
        if self.copy_mode == "zerocopy" and last in (errno.EOPNOTSUPP, errno.EINVAL):
            raise UserError(f"{self.ifname} queue {self.queue}: the driver has no AF_XDP zero-copy ({why}); "
                            "use --xdp-copy auto or copy")
        if last == errno.EBUSY:
            raise UserError(f"{self.ifname} queue {self.queue} already has an AF_XDP socket (another capture?)")
        raise UserError(f"cannot bind an AF_XDP socket to {self.ifname} queue {self.queue}: {why}")

    def fileno(self) -> int:
        return self.sock.fileno()

    def raw_stats(self) -> dict[str, int]:
        """The socket's XDP_STATISTICS since it was created (by whichever capture)."""
        if self.sock is None:
            return dict.fromkeys(STATS_FIELDS, 0)
        raw = self.sock.getsockopt(SOL_XDP, XDP_STATISTICS, 48)
        return dict(zip(STATS_FIELDS, struct.unpack("=6Q", raw.ljust(48, b"\0"))))

    def stats(self) -> dict[str, int]:
        """This capture's share: counted since it took the socket, until it handed it over."""
        if self.frozen is not None:
            return dict(self.frozen)
        raw = self.raw_stats()
        return {k: raw[k] - self.baseline.get(k, 0) for k in STATS_FIELDS}

    def close(self) -> None:
        self.umem = self.rx_words = self.rx_addr = self.fq_words = self.fq_addr = None
        if self.sock is not None:
            self.final_stats = self.stats()
            self.sock.close()                          # the kernel stops writing into the UMEM first (unless a
            self.sock = None                           # successor holds the socket too: then it goes on)
        for m in self.maps:
            m.close()
        self.maps = []
        if self.umem_fd >= 0:
            os.close(self.umem_fd)
            self.umem_fd = -1

    def __exit__(self, *exc) -> None:
        self.close()


class XskReceiver:
    """Every queue's socket, served by one ring-kernel call (``xsk_rx`` walks them in turn); a context manager
    that must close before the sockets do (it holds views of their rings)."""

    def __init__(self, sockets: list[XskSocket]):
        self.sockets = sockets
        self.geoms = np.array([s.geom for s in sockets], np.int64).reshape(len(sockets), X_SIZE)
        for i, s in enumerate(sockets):
            s.geom = self.geoms[i]                          # the kernel keeps each socket's indices here
        self._views = (tuple(s.umem for s in sockets), tuple(s.rx_words for s in sockets),
                       tuple(s.rx_addr for s in sockets), tuple(s.fq_words for s in sockets),
                       tuple(s.fq_addr for s in sockets))

    def receive(self, budget, state, wait=None, pollfds=None):
        """Run the ring kernel once over every socket on ``state`` (a ``deliver.RxState``); returns (status,
        frames).  Without ``wait`` it does not wait."""
        if wait is None:
            wait, pollfds = no_wait(self.filenos())
        self.geoms[:, X_MONO_TO_REAL] = time.time_ns() - time.monotonic_ns()
        return xsk_rx(*self._views, self.geoms, budget, wait, pollfds, state)

    def filenos(self) -> list[int]:
        return [s.fileno() for s in self.sockets]

    def socket_errors(self) -> list[int]:
        """SO_ERROR of each socket (reading it clears it)."""
        return [s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) for s in self.sockets]

    def stats(self) -> dict[str, int]:
        per_queue = [s.stats() for s in self.sockets]
        return {key: sum(q[key] for q in per_queue) for key in STATS_FIELDS}

    # -- handover (capture/handover.py): the same sockets, another process ---------------------------------
    def hand_over(self) -> dict:
        """Once the ring kernel has stopped for good: where each socket's indices stand and what its statistics
        say, and from now on our statistics stay as they are (what the sockets count next is the successor's)."""
        out = {"queues": [], "stats": []}
        for s in self.sockets:
            out["queues"].append(s.positions())
            raw = s.raw_stats()
            s.frozen = {k: raw[k] - s.baseline.get(k, 0) for k in STATS_FIELDS}
            out["stats"].append(raw)
        return out

    def resume(self, handed: dict) -> None:
        """Adopted sockets: take up the indices where the predecessor left them, and count statistics from the
        figures it last read (so every drop is counted by exactly one of the two)."""
        for s, at, raw in zip(self.sockets, handed["queues"], handed["stats"]):
            s.resume(at)
            s.baseline = {k: int(raw.get(k, 0)) for k in STATS_FIELDS}

    def close(self) -> None:
        self._views = None

    def __enter__(self) -> "XskReceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
