// SPDX-License-Identifier: GPL-2.0
/*
 * datapath.bpf.c: the reference programs of the data-path benchmark
 * (bench/datapath.py), loaded through rpctl's own loader on groups of the
 * same kind as rpctl's (four listeners, their own socket array "socks").
 *
 * The floors: what any SK_REUSEPORT program pays before doing anything of
 * its own.
 *   rp_return_only  the kernel's entry into the program and the two clock
 *                   reads of bpf_stats around it; the kernel then selects;
 *   rp_select_only  that, plus one bpf_sk_select_reuseport() at hash & 3:
 *                   the least a program that chooses a socket does;
 *   rp_select_only_256  the same over 256 sockets (hash & 255).
 *
 * The ladder: rpctl's weighted path built up one piece at a time, on the
 * live state of an rpctl group (its "ctl" and "gens" maps, read only), to
 * say what each nanosecond above the floor buys.
 *   rp_lookups      + the ctl and generation lookups (the atomic flip);
 *   rp_slot         + the member from the generation's one-byte slot;
 *   rp_counted      + the member's per-CPU counter (= rpctl's fast path,
 *                   without its mode and migration tests);
 *   rp_wide_slots   rp_counted with the table of rpctl before ABI 3:
 *                   65,536 u32 slots per generation in a map of their own
 *                   ("wide_slots"), 256 KiB where the byte table is 1 KiB.
 *
 * The UDP flow table's key (docs/decisions/0010): a flow table alone, the
 * member of a known flow selected, a new flow remembered at hash & 3.
 *   rp_flow_by_hash   keyed by the kernel's 4-tuple hash, md->hash (what
 *                     rpctl does): no packet read, a 4-byte key;
 *   rp_flow_by_tuple  keyed by the IPv4 4-tuple itself: the addresses read
 *                     with a helper (they lie before md->data), the ports in
 *                     place, a 12-byte key to hash;
 *   rp_flow_in_sets   not a hash map: an array of 4-way sets of one cache
 *                     line each, set = md->hash & mask, tag = md->hash: one
 *                     inlined array lookup and one line per datagram, where
 *                     a hash map reads a bucket and an element (and calls
 *                     its lookup).  The alternative decision 0010 weighs.
 */
#include <uapi/linux/bpf.h>
#include "rpctl.h"

#ifndef RP_FD_SOCKS
#error "compile through rpctl's loader: it passes the map fds as -DRP_FD_*"
#endif

#define RP_MAP(fd) ((void *)bpf_pseudo_fd(1, (fd)))
#define WIDE_SLOT_BITS 16

int rp_return_only(struct sk_reuseport_md *md)
{
	return SK_PASS;
}

static __always_inline int select_at(struct sk_reuseport_md *md, __u32 mask)
{
	__u32 idx = md->hash & mask;

	bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0);
	return SK_PASS;
}

int rp_select_only(struct sk_reuseport_md *md)
{
	return select_at(md, 3);
}

int rp_select_only_256(struct sk_reuseport_md *md)
{
	return select_at(md, 255);
}

#ifdef RP_FD_GENS

static __always_inline struct rp_gen *live_gen(__u32 *gen)
{
	__u32 zero = 0;
	struct rp_ctl *ctl = bpf_map_lookup_elem(RP_MAP(RP_FD_CTL), &zero);

	if (!ctl)
		return 0;
	*gen = ctl->gen & 1;
	return bpf_map_lookup_elem(RP_MAP(RP_FD_GENS), gen);
}

static __always_inline void count(__u32 idx)
{
	struct rp_member_stats *st = bpf_map_lookup_elem(RP_MAP(RP_FD_MEMBER_STATS), &idx);

	if (st)
		st->selected++;
}

int rp_lookups(struct sk_reuseport_md *md)
{
	__u32 gen, idx = md->hash & 3;
	struct rp_gen *g = live_gen(&gen);

	if (!g || !g->n_live)
		return SK_PASS;
	bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0);
	return SK_PASS;
}

int rp_slot(struct sk_reuseport_md *md)
{
	__u32 gen, idx;
	struct rp_gen *g = live_gen(&gen);

	if (!g || !g->n_live)
		return SK_PASS;
	idx = g->slots[md->hash & RP_SLOT_MASK];
	bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0);
	return SK_PASS;
}

int rp_counted(struct sk_reuseport_md *md)
{
	__u32 gen, idx;
	struct rp_gen *g = live_gen(&gen);

	if (!g || !g->n_live)
		return SK_PASS;
	idx = g->slots[md->hash & RP_SLOT_MASK];
	if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0)
		count(idx);
	return SK_PASS;
}

int rp_wide_slots(struct sk_reuseport_md *md)
{
	__u32 gen, slot, idx, *member;
	struct rp_gen *g = live_gen(&gen);

	if (!g || !g->n_live)
		return SK_PASS;
	slot = (gen << WIDE_SLOT_BITS) | (md->hash & ((1u << WIDE_SLOT_BITS) - 1));
	member = bpf_map_lookup_elem(RP_MAP(RP_FD_WIDE_SLOTS), &slot);
	if (!member)
		return SK_PASS;
	idx = *member;
	if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0)
		count(idx);
	return SK_PASS;
}

#endif /* RP_FD_GENS */

#if defined(RP_FD_FLOWS_BY_HASH) || defined(RP_FD_FLOWS_BY_TUPLE) || defined(RP_FD_FLOW_SETS)

static __always_inline int select_flow(struct sk_reuseport_md *md, void *flows, void *key)
{
	struct rp_flow *f = bpf_map_lookup_elem(flows, key), fresh = {};
	__u32 idx;

	if (f) {
		idx = f->member;
	} else {
		idx = md->hash & 3;
		fresh.member = idx;
		bpf_map_update_elem(flows, key, &fresh, BPF_NOEXIST);
	}
	bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0);
	return SK_PASS;
}

#endif

#ifdef RP_FD_FLOWS_BY_HASH

int rp_flow_by_hash(struct sk_reuseport_md *md)
{
	__u32 key = md->hash;

	return select_flow(md, RP_MAP(RP_FD_FLOWS_BY_HASH), &key);
}

#endif /* RP_FD_FLOWS_BY_HASH */

#ifdef RP_FD_FLOWS_BY_TUPLE

struct tuple4 {
	__u8 addrs[8];         /* source, destination */
	__u8 ports[4];         /* source, destination */
};

int rp_flow_by_tuple(struct sk_reuseport_md *md)
{
	const __u8 *data = md->data, *end = md->data_end;
	struct tuple4 key = {};

	if (bpf_skb_load_bytes_relative(md, 12, key.addrs, 8, BPF_HDR_START_NET))
		return SK_PASS;
	if (data + 4 > end)
		return SK_PASS;
	key.ports[0] = data[0];
	key.ports[1] = data[1];
	key.ports[2] = data[2];
	key.ports[3] = data[3];
	return select_flow(md, RP_MAP(RP_FD_FLOWS_BY_TUPLE), &key);
}

#endif /* RP_FD_FLOWS_BY_TUPLE */

#ifdef RP_FD_FLOW_SETS

#define FLOW_SET_BITS 14       /* 16,384 sets of 4: 65,536 flows in 1 MiB */
#define FLOW_WAYS 4

struct flow_way {
	__u32 tag;             /* md->hash | 1 (0: empty) */
	__u32 member;
	__u64 seen_ns;
};

struct flow_set {
	struct flow_way way[FLOW_WAYS];
};

int rp_flow_in_sets(struct sk_reuseport_md *md)
{
	__u32 set = md->hash & ((1u << FLOW_SET_BITS) - 1), tag = md->hash | 1, idx = md->hash & 3, i;
	struct flow_set *s = bpf_map_lookup_elem(RP_MAP(RP_FD_FLOW_SETS), &set);

	if (!s)
		return SK_PASS;
#pragma unroll
	for (i = 0; i < FLOW_WAYS; i++) {
		if (s->way[i].tag == tag) {
			idx = s->way[i].member;
			goto select;
		}
	}
	/* A new flow takes an empty way (the benchmark never fills a set). */
#pragma unroll
	for (i = 0; i < FLOW_WAYS; i++) {
		if (!s->way[i].tag) {
			s->way[i].member = idx;
			s->way[i].tag = tag;
			break;
		}
	}
select:
	bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0);
	return SK_PASS;
}

#endif /* RP_FD_FLOW_SETS */
