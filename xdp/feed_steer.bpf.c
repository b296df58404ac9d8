// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* feed_steer: hand the subscribed multicast feed to AF_XDP sockets, everything else to the stack.
 *
 * Per frame: parse Ethernet, up to FEED_MAX_TAGS VLAN tags (802.1Q / 802.1ad / 0x9100), IPv4
 * (options allowed), UDP -- the acceptance policy of appliance/decode/frames.py; look (destination group, destination port) up in `feeds`; on a match stamp a receive
 * time into the XDP metadata area and redirect to the AF_XDP socket bound on this rx queue
 * (`xsks`).  Every other frame returns XDP_PASS.  Each outcome is counted in `counters`.
 *
 * Policy decisions:
 *  - IPv4 fragments (MF set or a non-zero offset) are passed and counted, never redirected: a
 *    first fragment would hand the capture half a datagram and later ones carry no UDP header.
 *    A feed that fragments is misconfigured; the counter makes that visible.
 *  - No IPv6: the feeds this appliance takes are IPv4 multicast.
 *  - Plain SEC("xdp"), not "xdp.frags": frames larger than one page are not expected on a feed.
 *
 * Needs no kernel BTF: no CO-RE relocations, no kfuncs, only stable helpers.  The object's own
 * BTF (clang -g) describes the maps; libbpf reads it in user space.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "feed_steer.h"

#define IP_MF		0x2000	/* include/net/ip.h, not in UAPI */
#define IP_OFFSET	0x1fff

struct vlan_hdr {
	__be16 h_vlan_tci;
	__be16 h_vlan_encapsulated_proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FEEDS_MAX_ENTRIES);
	__type(key, struct feed_key);
	__type(value, feed_index_t);
} feeds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSKS_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STEER_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *slot = bpf_map_lookup_elem(&counters, &index);

	/* Per-CPU slot and XDP runs with migration disabled: a plain increment cannot race. */
	if (slot)
		*slot += 1;
}

/* Parse up to the UDP header and fill *key.  Returns -1 for a candidate feed frame, otherwise
 * the counter index of the reason it is not one.  Every read is preceded by its bounds check. */
static __always_inline int parse_feed(void *data, void *data_end, struct feed_key *key)
{
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;
	struct iphdr *ip;
	struct udphdr *udp;
	void *cursor;
	__u16 proto;
	__u32 ip_len, tot_len, udp_len;

	if ((void *)(eth + 1) > data_end)
		return STEER_PASS_MALFORMED;
	proto = eth->h_proto;
	cursor = eth + 1;

#pragma unroll
	for (int depth = 0; depth < FEED_MAX_TAGS; depth++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD) &&
		    proto != bpf_htons(ETH_P_QINQ_OLD))
			break;
		vlan = cursor;
		if ((void *)(vlan + 1) > data_end)
			return STEER_PASS_MALFORMED;
		proto = vlan->h_vlan_encapsulated_proto;
		cursor = vlan + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return STEER_PASS_NOT_FEED;		/* not IPv4, or a tag too many */

	ip = cursor;
	if ((void *)(ip + 1) > data_end)
		return STEER_PASS_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return STEER_PASS_MALFORMED;
	if (ip->protocol != IPPROTO_UDP)
		return STEER_PASS_NOT_FEED;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return STEER_PASS_FRAGMENT;
	ip_len = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	/* The verifier of older kernels (Debian 12's 6.1) does not follow a value through a byte swap: it would
	 * see tot_len as unbounded and refuse the pointer sum below.  A mask bounds it; barrier_var keeps clang
	 * from dropping the mask as redundant (it knows a swapped u16 fits 16 bits). */
	barrier_var(tot_len);
	tot_len &= 0xffff;
	if (tot_len < ip_len + sizeof(*udp))
		return STEER_PASS_MALFORMED;
	/* Only compared, never dereferenced: tot_len is a u16, so the sum stays within the verifier's range. */
	if (cursor + tot_len > data_end)
		return STEER_PASS_MALFORMED;

	udp = cursor + ip_len;
	if ((void *)(udp + 1) > data_end)
		return STEER_PASS_MALFORMED;
	udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) || ip_len + udp_len > tot_len)
		return STEER_PASS_MALFORMED;

	key->group = ip->daddr;
	key->port = udp->dest;
	key->pad = 0;
	return -1;
}

/* Reserve struct steer_meta right before the frame and fill it.  Returns 0 when stamped. */
static __always_inline int stamp_meta(struct xdp_md *ctx, __u32 queue)
{
	struct steer_meta *meta;
	void *data;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return -1;
	/* adjust_meta invalidates every packet pointer: reload and re-check. */
	data = (void *)(long)ctx->data;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > data)
		return -1;
	meta->rx_ns = bpf_ktime_get_ns();
	meta->magic = STEER_META_MAGIC;
	meta->rx_queue = queue;
	return 0;
}

SEC("xdp")
int feed_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 queue = ctx->rx_queue_index;
	struct feed_key key;
	long action;
	int reason;

	reason = parse_feed(data, data_end, &key);
	if (reason >= 0) {
		count(reason);
		return XDP_PASS;
	}
	if (!bpf_map_lookup_elem(&feeds, &key)) {
		count(STEER_PASS_NOT_FEED);
		return XDP_PASS;
	}
	/* Without a socket on this queue the frame goes to the stack rather than being dropped by a
	 * failed redirect, so a capture that binds fewer queues than the NIC has loses nothing. */
	if (!bpf_map_lookup_elem(&xsks, &queue)) {
		count(STEER_NO_SOCKET);
		return XDP_PASS;
	}
	if (stamp_meta(ctx, queue))
		count(STEER_META_FAILED);

	action = bpf_redirect_map(&xsks, queue, XDP_PASS);
	if (action != XDP_REDIRECT) {
		count(STEER_REDIRECT_FAILED);
		return XDP_PASS;
	}
	count(STEER_REDIRECT);
	return XDP_REDIRECT;
}

char _license[] SEC("license") = "Dual BSD/GPL";
