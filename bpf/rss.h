/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rss.h: the receive queue the NIC's RSS put a packet on, for the RSS
 * pinned mode (docs/decisions/0004): the NIC's Toeplitz hash recomputed
 * from the packet, through the device's indirection table.  The kernel's
 * md->hash is its own hash of the 4-tuple, never the NIC's: it cannot
 * name the queue.
 */
#ifndef RPCTL_RSS_H
#define RPCTL_RSS_H

#include "rpctl.h"

/* EtherType of md->eth_protocol, which holds it in network byte order. */
#define RP_ETH_P_IP 0x0800
#define RP_ETH_P_IPV6 0x86DD

/* The NIC's Toeplitz hash of in[0..len-1], from the per-byte table the
 * controller built with the device's key.  len is a constant at each call
 * site, so the loop unrolls into len table loads. */
static __always_inline __u32 rp_toeplitz(struct rp_gen *g, const __u8 *in, const __u32 len)
{
	__u32 h = 0, i;

#pragma unroll
	for (i = 0; i < len; i++)
		h ^= g->rss_hash[i][in[i]];
	return h;
}

/* Whether the transport header holds the source and destination ports
 * (its first four bytes, where md->data points); then out[0..3] are they.
 * Read in place (direct packet access) rather than through
 * bpf_skb_load_bytes: one helper call less on every RSS-pinned selection. */
static __always_inline int rp_ports(struct sk_reuseport_md *md, __u8 *out)
{
	const __u8 *data = md->data, *end = md->data_end;

	if (data + 4 > end)
		return 0;
	out[0] = data[0];
	out[1] = data[1];
	out[2] = data[2];
	out[3] = data[3];
	return 1;
}

/* Whether the NIC's queue of this packet can be told; then *queue is it.
 * The hash's input is what the NIC hashes, in the order it hashes it:
 * source address, destination address, then source port and destination
 * port when it hashes ports (a port left out reads as zero, which adds
 * nothing to the hash).  Not IPv4 or IPv6, a version the NIC does not
 * hash the way this recomputes it, or headers out of reach: no queue. */
static __always_inline int rp_rss_queue(struct sk_reuseport_md *md, struct rp_gen *g, __u32 *queue)
{
	__u8 in[RP_RSS_INPUT_MAX] = {};
	__u32 h, size;

	/* The addresses sit at fixed offsets of the network header, before
	 * md->data, so a helper reads them. */
	if (md->eth_protocol == bpf_htons(RP_ETH_P_IP)) {
		if (!(g->rss_flags & RP_RSS_IPV4))
			return 0;
		if (bpf_skb_load_bytes_relative(md, 12, in, 8, BPF_HDR_START_NET))
			return 0;
		if (g->rss_flags & RP_RSS_IPV4_PORTS && !rp_ports(md, in + 8))
			return 0;
		h = rp_toeplitz(g, in, 12);
	} else if (md->eth_protocol == bpf_htons(RP_ETH_P_IPV6)) {
		if (!(g->rss_flags & RP_RSS_IPV6))
			return 0;
		if (bpf_skb_load_bytes_relative(md, 8, in, 32, BPF_HDR_START_NET))
			return 0;
		if (g->rss_flags & RP_RSS_IPV6_PORTS && !rp_ports(md, in + 32))
			return 0;
		h = rp_toeplitz(g, in, RP_RSS_INPUT_MAX);
	} else {
		return 0;
	}
	size = g->rss_indir_size;
	if (!size || size > RP_RSS_MAX_INDIR)
		return 0;
	h %= size;
	/* clang knows h < size <= RP_RSS_MAX_INDIR and would drop the mask;
	 * the verifier does not, and needs it. */
	asm volatile("" : "+r"(h));
	*queue = g->rss_indir[h & (RP_RSS_MAX_INDIR - 1)];
	return 1;
}

#endif /* RPCTL_RSS_H */
