// SPDX-License-Identifier: GPL-2.0
/*
 * steer.bpf.c: the SK_REUSEPORT program of one rpctl group.
 *
 * For every new TCP connection (SYN) or UDP datagram that reaches the
 * reuseport group, pick a socket from the group's socket array:
 *   1. a request migrating from a closing listener goes to step 3: it has
 *      no arrival CPU or queue of its own (the program runs on the CPU that
 *      closes the listener);
 *   2. in a pinned mode, the member pinned to the CPU the program runs on
 *      (CPU mode), or to the receive queue the NIC's RSS put the packet on
 *      (RSS mode: the NIC's Toeplitz hash, recomputed here from the packet,
 *      through the device's indirection table).  A CPU or queue whose
 *      member is draining or gone, or that has none, goes on to step 3 and
 *      is counted;
 *   3. the member named by the live weighted slot table at hash & mask;
 *      in an adaptive group, if rpctl serve has throttled that member (its
 *      queue built while others' did not) and the throttle's lease runs,
 *      the same table at up to RP_REHASH_TRIES re-mixed hashes, skipping
 *      throttled members: its share spreads over the others in proportion
 *      to their weights (docs/decisions/0013); if every try meets a
 *      throttled or gone member, the slot's member after all (a throttle
 *      never refuses work);
 *   4. if that socket is gone (closed since the last publish: the kernel
 *      emptied its array entry), the same table again at up to
 *      RP_REHASH_TRIES re-mixed hashes of the flow: the dead member's share
 *      spreads over the live members in proportion to their weights
 *      (docs/decisions/0009), deterministic for a flow;
 *   5. if every re-hash met a gone socket too, the first member that takes
 *      it, walking at most RP_FALLBACK_TRIES entries of the live list from
 *      hash % n_live: deterministic for a flow, never a draining member;
 *   6. if no member is live, SK_PASS without a choice: the kernel's own
 *      hash selection takes over (and the group counter says so).
 * Unregistered sockets of the port are never in the array, so while any
 * member is live they get nothing (hijack protection).
 *
 * Compiled by bcc at load time.  bcc 0.26 cannot declare a
 * REUSEPORT_SOCKARRAY, so the controller creates every map itself and
 * passes their fds as RP_FD_* macros; the program names them through
 * bpf_pseudo_fd(), which bcc emits as a map-fd load.
 */
#include <uapi/linux/bpf.h>
#include "rpctl.h"

#ifndef RP_FD_SOCKS
#error "compile through rpctl's loader: it passes the map fds as -DRP_FD_*"
#endif

#define RP_MAP(fd) ((void *)bpf_pseudo_fd(1, (fd)))

/* Re-hashes into the weighted table when a slot's socket is gone.  Each
 * meets a gone member with the probability p of the gone members' share of
 * the slots, so the live-list walk below takes p^8 of their traffic: 0.4 %
 * when half the members are gone, under 0.002 % when a quarter are.  Each
 * try is one helper call, like a step of the walk. */
#define RP_REHASH_TRIES 8

/* The fallback walk is bounded so the verifier can follow it: each try is
 * a helper call whose result forks the verifier's state.  A walk only
 * meets dead entries for members that closed since the last publish. */
#define RP_FALLBACK_TRIES 16

/* EtherType of md->eth_protocol, which holds it in network byte order. */
#define RP_ETH_P_IP 0x0800
#define RP_ETH_P_IPV6 0x86DD

enum rp_outcome {
	RP_SELECTED,
	RP_FALLBACK,
	RP_MIGRATED,
	RP_PINNED,
};

static __always_inline void rp_count_member(__u32 idx, enum rp_outcome outcome)
{
	struct rp_member_stats *st = bpf_map_lookup_elem(RP_MAP(RP_FD_MEMBER_STATS), &idx);

	if (!st)
		return;
	/* Per-CPU values: no other writer on this CPU, no atomics needed. */
	if (outcome == RP_SELECTED)
		st->selected++;
	else if (outcome == RP_FALLBACK)
		st->fallback++;
	else if (outcome == RP_MIGRATED)
		st->migrated++;
	else
		st->pinned++;
}

static __always_inline struct rp_group_stats *rp_group_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(RP_MAP(RP_FD_GROUP_STATS), &zero);
}

/* The slot of re-hash number `attempt` of a flow's hash: murmur3's
 * finalizer over the hash offset by a multiple of the golden ratio, so each
 * try lands on a slot unrelated to the flow's first slot and to the other
 * tries (a slot is the low bits, which the plain hash would repeat). */
static __always_inline __u32 rp_rehash_slot(__u32 h, __u32 attempt)
{
	h += (attempt + 1) * 0x9e3779b9u;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h & RP_SLOT_MASK;
}

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

/* The source and destination ports: the first four bytes of the transport
 * header, where md->data points.  Read in place (direct packet access)
 * rather than through bpf_skb_load_bytes: one helper call less on every
 * RSS-pinned selection.  Returns 0, or -1 if the header is not there. */
static __always_inline int rp_ports(struct sk_reuseport_md *md, __u8 *out)
{
	const __u8 *data = md->data, *end = md->data_end;

	if (data + 4 > end)
		return -1;
	out[0] = data[0];
	out[1] = data[1];
	out[2] = data[2];
	out[3] = data[3];
	return 0;
}

/* RSS mode: the receive queue the NIC put this packet on.  Its input is
 * what the NIC hashes, in the order it hashes it: source address,
 * destination address, then source port and destination port when it
 * hashes ports (a port left out reads as zero, which adds nothing to the
 * hash).  The kernel's md->hash is its own hash of the 4-tuple, never the
 * NIC's: it cannot name the queue.  Returns 0 and sets *queue, or -1. */
static __always_inline int rp_rss_queue(struct sk_reuseport_md *md, struct rp_gen *g, __u32 *queue)
{
	__u8 in[RP_RSS_INPUT_MAX] = {};
	__u32 h, size;

	/* The addresses sit at fixed offsets of the network header, before
	 * md->data, so a helper reads them. */
	if (md->eth_protocol == bpf_htons(RP_ETH_P_IP)) {
		if (!(g->rss_flags & RP_RSS_IPV4))
			return -1;
		if (bpf_skb_load_bytes_relative(md, 12, in, 8, BPF_HDR_START_NET))
			return -1;
		if (g->rss_flags & RP_RSS_IPV4_PORTS && rp_ports(md, in + 8))
			return -1;
		h = rp_toeplitz(g, in, 12);
	} else if (md->eth_protocol == bpf_htons(RP_ETH_P_IPV6)) {
		if (!(g->rss_flags & RP_RSS_IPV6))
			return -1;
		if (bpf_skb_load_bytes_relative(md, 8, in, 32, BPF_HDR_START_NET))
			return -1;
		if (g->rss_flags & RP_RSS_IPV6_PORTS && rp_ports(md, in + 32))
			return -1;
		h = rp_toeplitz(g, in, RP_RSS_INPUT_MAX);
	} else {
		return -1;
	}
	size = g->rss_indir_size;
	if (!size || size > RP_RSS_MAX_INDIR)
		return -1;
	h %= size;
	/* clang knows h < size <= RP_RSS_MAX_INDIR and would drop the mask;
	 * the verifier does not, and needs it. */
	asm volatile("" : "+r"(h));
	*queue = g->rss_indir[h & (RP_RSS_MAX_INDIR - 1)];
	return 0;
}

/* Pinned modes: select the member of this CPU or queue.  Returns 0 when
 * it took the connection; otherwise the weighted table decides, and the
 * group counter names why. */
static __always_inline int rp_select_pinned(struct sk_reuseport_md *md, struct rp_gen *g)
{
	struct rp_group_stats *gs;
	__u32 key, idx;

	if (g->mode == RP_MODE_CPU) {
		key = bpf_get_smp_processor_id();
	} else if (rp_rss_queue(md, g, &key)) {
		/* Not IPv4/IPv6, a version the NIC does not hash the way we
		 * recompute, or headers out of reach. */
		gs = rp_group_stats();
		if (gs)
			gs->rss_unhashed++;
		return -1;
	}
	idx = key < RP_MAX_PINS ? g->pin[key & (RP_MAX_PINS - 1)] : RP_NO_MEMBER;
	if (idx == RP_NO_MEMBER) {
		/* Nobody is pinned to this CPU or queue. */
		gs = rp_group_stats();
		if (gs)
			gs->pin_unassigned++;
		return -1;
	}
	/* RP_PIN_UNAVAILABLE makes idx an invalid key: a draining member is
	 * never selected, a gone one's entry is empty; both fall back. */
	if (!(idx & RP_PIN_UNAVAILABLE) && bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0) {
		rp_count_member(idx, RP_PINNED);
		return 0;
	}
	gs = rp_group_stats();
	if (gs)
		gs->pin_fallbacks++;
	return -1;
}

/* Whether the throttle names member idx (its lease is checked apart). */
static __always_inline int rp_throttled(struct rp_throttle *t, __u32 idx)
{
	return t->bits[(idx / 64) & (RP_MAX_MEMBERS / 64 - 1)] >> (idx % 64) & 1;
}

/* Adaptive groups, step 3: when the slot's member `first` is throttled
 * and the lease runs, select an unthrottled member of the re-hashed table
 * (as rp_fallback does for a gone one).  Returns 0 when it took the
 * connection; otherwise the slot's member is tried as in a plain group. */
static __always_inline int rp_avoid_throttled(struct sk_reuseport_md *md, struct rp_gen *g, __u32 first)
{
	struct rp_group_stats *gs;
	struct rp_throttle *t;
	__u32 zero = 0, idx, i;

	t = bpf_map_lookup_elem(RP_MAP(RP_FD_THROTTLE), &zero);
	if (!t || !rp_throttled(t, first))
		return -1;
	/* serve renews the lease at every sample: an expired one means no
	 * serve looks at the queues any more, so the plain weights decide. */
	if (bpf_ktime_get_ns() > t->lease_ns)
		return -1;
	gs = rp_group_stats();
	if (gs)
		gs->throttle_skips++;
#pragma unroll
	for (i = 0; i < RP_REHASH_TRIES; i++) {
		idx = g->slots[rp_rehash_slot(md->hash, i)];
		if (rp_throttled(t, idx))
			continue;
		if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0) {
			rp_count_member(idx, RP_FALLBACK);
			return 0;
		}
	}
	return -1;
}

/* Whether the program runs for a request migrating from a closing listener. */
static __always_inline int rp_migrating(struct sk_reuseport_md *md)
{
#ifdef RP_HAVE_MIGRATE
	return md->migrating_sk != 0;
#else
	return 0;
#endif
}

/* Steps 4 to 6: the slot's socket is gone, or no member is live.  It reads
 * n_live and md's fields again rather than take them from rp_select: a
 * value kept across its helper calls would have clang spill registers on
 * rp_select's common path too (a call may change md and g, so these are
 * loads after the first select, never copies). */
static __always_inline int rp_fallback(struct sk_reuseport_md *md, struct rp_gen *g)
{
	struct rp_group_stats *gs;
	__u32 n = g->n_live, idx, start, i, j;

	if (n) {
		/* Slot's socket closed (or being migrated away from). */
		gs = rp_group_stats();
		if (gs)
			gs->slot_misses++;
		/* Re-hash into the same table: proportional to the weights.
		 * Unrolled, and each try's failure falls through to the next,
		 * so the verifier walks straight-line code. */
#pragma unroll
		for (i = 0; i < RP_REHASH_TRIES; i++) {
			idx = g->slots[rp_rehash_slot(md->hash, i)];
			if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0) {
				rp_count_member(idx, rp_migrating(md) ? RP_MIGRATED : RP_FALLBACK);
				return SK_PASS;
			}
		}
	}

	/* Last resort: deterministic walk over the live list. */
	n = g->n_live;
	if (n > RP_MAX_MEMBERS)
		n = RP_MAX_MEMBERS;
	if (n) {
		start = md->hash % n;
		/* A constant trip count with no other exit, so clang unrolls
		 * it and the verifier walks straight-line code.  With fewer
		 * than RP_FALLBACK_TRIES live members, entries are tried
		 * again: harmless on this rare path. */
#pragma unroll
		for (i = 0; i < RP_FALLBACK_TRIES; i++) {
			/* A modulo, not "if (j >= n) j -= n": a branch here
			 * would double the verifier's states at every try. */
			j = (start + i) % n;
			/* clang knows j < n <= RP_MAX_MEMBERS and would drop
			 * the mask; the verifier does not, and needs it. */
			asm volatile("" : "+r"(j));
			idx = g->live[j & (RP_MAX_MEMBERS - 1)];
			if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0) {
				rp_count_member(idx, rp_migrating(md) ? RP_MIGRATED : RP_FALLBACK);
				return SK_PASS;
			}
		}
	}

	/* No live member: the kernel's own selection takes over. */
	gs = rp_group_stats();
	if (gs)
		gs->no_live_member++;
	return SK_PASS;
}

int rp_select(struct sk_reuseport_md *md)
{
	struct rp_ctl *ctl;
	struct rp_gen *g;
	__u32 zero = 0, gen, idx;
	int migrating;

	/* Element 0 of an array always exists: these checks only satisfy
	 * the verifier.  SK_PASS without a choice lets the kernel select. */
	ctl = bpf_map_lookup_elem(RP_MAP(RP_FD_CTL), &zero);
	if (!ctl)
		return SK_PASS;
	gen = ctl->gen & 1;
	g = bpf_map_lookup_elem(RP_MAP(RP_FD_GENS), &gen);
	if (!g)
		return SK_PASS;

	/* A closing listener hands over a queued or half-open request. */
	migrating = rp_migrating(md);

	/* The weighted path's only cost of the pinned modes: this test of a
	 * field of the generation it has looked up anyway. */
	if (g->mode != RP_MODE_WEIGHTED && !migrating && rp_select_pinned(md, g) == 0)
		return SK_PASS;

	/* Weighted table of the live generation: one byte in the element
	 * already looked up, so no further lookup and a warm cache line. */
	if (g->n_live) {
		idx = g->slots[md->hash & RP_SLOT_MASK];
		/* A plain group's only cost of adaptive steering: this test of
		 * a field of the ctl element it has looked up anyway.  A
		 * migrating request is not new work: it goes where it must. */
		if (ctl->flags & RP_CTL_ADAPTIVE && !migrating && rp_avoid_throttled(md, g, idx) == 0)
			return SK_PASS;
		if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0) {
			rp_count_member(idx, migrating ? RP_MIGRATED : RP_SELECTED);
			return SK_PASS;
		}
	}
	return rp_fallback(md, g);
}
