/* Shared between feed_steer.bpf.c (kernel side) and appliance/ring/steer.py (user side).
 *
 * steer.py mirrors every struct here as a numpy dtype and every constant by name;
 * tests/test_steer.py compiles this header for the host and checks sizes, offsets and values.
 * Change both sides together.
 */
#ifndef FEED_STEER_H
#define FEED_STEER_H

#include <linux/types.h>

/* Key of the `feeds` hash map: one subscribed (destination group, destination port).
 * Both fields in network byte order, exactly as they sit in the IPv4 and UDP headers, so the
 * program copies them without swapping.  pad must be zero (it is part of the hashed key). */
struct feed_key {
	__u32 group;	/* IPv4 destination address, network order */
	__u16 port;	/* UDP destination port, network order */
	__u16 pad;	/* zero */
};

/* Value of the `feeds` map: the feed's index in the capture's own feed list (informational;
 * the program only needs the key to exist). */
typedef __u32 feed_index_t;

/* Written into the XDP metadata area, immediately before the first byte of the Ethernet frame,
 * for every frame redirected to an AF_XDP socket.  The consumer finds it at (frame data - 16).
 * A frame whose metadata could not be written has no valid magic there: the consumer must zero
 * `magic` before it hands a UMEM frame back to the fill ring, or a stale stamp from the frame's
 * previous use would look valid. */
struct steer_meta {
	__u64 rx_ns;	/* bpf_ktime_get_ns(): CLOCK_MONOTONIC at XDP time */
	__u32 magic;	/* STEER_META_MAGIC */
	__u32 rx_queue;	/* ctx->rx_queue_index */
};

#define STEER_META_MAGIC	0x53544d31u	/* ASCII "STM1" */

/* The frame acceptance policy is written down once, in appliance/decode/frames.py; this program, that
 * parser and the TPACKET_V3 classic filter accept the same frames (tests/test_frame_policy.py). */
#define FEED_MAX_TAGS		4	/* VLAN tags (0x8100, 0x88A8, 0x9100) before the IPv4 EtherType */
#define ETH_P_QINQ_OLD		0x9100	/* pre-standard QinQ TPID, not in linux/if_ether.h */

#define FEEDS_MAX_ENTRIES	256	/* subscribed (group, port) pairs */
#define XSKS_MAX_ENTRIES	64	/* rx queues that can carry an AF_XDP socket */

/* Indices of the per-CPU u64 `counters` array.  Every frame the program sees is counted under
 * exactly one outcome (all but STEER_META_FAILED, which is counted in addition to STEER_REDIRECT). */
#define STEER_PASS_NOT_FEED	0	/* well formed, but not IPv4/UDP to a subscribed group:port, or more
					 * than FEED_MAX_TAGS tags */
#define STEER_PASS_MALFORMED	1	/* truncated L2/VLAN/IPv4/UDP header, IPv4 version != 4, IHL < 5,
					 * IPv4 total length beyond the frame or short of IP + UDP headers,
					 * UDP length < 8 or beyond the IPv4 total length */
#define STEER_PASS_FRAGMENT	2	/* IPv4 fragment (MF set or offset != 0): left to the stack */
#define STEER_REDIRECT		3	/* subscribed and handed to the AF_XDP socket of its rx queue */
#define STEER_NO_SOCKET		4	/* subscribed, but no socket bound on this rx queue: passed */
#define STEER_META_FAILED	5	/* bpf_xdp_adjust_meta failed; frame redirected without a stamp */
#define STEER_REDIRECT_FAILED	6	/* bpf_redirect_map did not redirect (socket just removed): passed */
#define STEER_NCOUNTERS		7

#endif /* FEED_STEER_H */
