// SPDX-License-Identifier: GPL-2.0
/*
 * steer.bpf.c: the SK_REUSEPORT program of one rpctl group.
 *
 * For every new TCP connection (SYN) or UDP datagram that reaches the
 * reuseport group, pick a socket from the group's socket array:
 *   1. the member named by the live weighted slot table at hash & mask;
 *   2. if that socket is gone (closed: the kernel emptied its array entry),
 *      the first member that takes it, walking at most RP_FALLBACK_TRIES
 *      entries of the live list from hash % n_live: deterministic for a
 *      flow, never a draining member;
 *   3. if no member is live, SK_PASS without a choice: the kernel's own
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

/* The fallback walk is bounded so the verifier can follow it: each try is
 * a helper call whose result forks the verifier's state.  A walk only
 * meets dead entries for members that closed since the last publish. */
#define RP_FALLBACK_TRIES 16

enum rp_outcome {
	RP_SELECTED,
	RP_FALLBACK,
	RP_MIGRATED,
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
	else
		st->migrated++;
}

static __always_inline struct rp_group_stats *rp_group_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(RP_MAP(RP_FD_GROUP_STATS), &zero);
}

int rp_select(struct sk_reuseport_md *md)
{
	struct rp_group_stats *gs;
	struct rp_ctl *ctl;
	struct rp_gen *g;
	__u32 zero = 0, gen, slot, idx, n, start, i, j;
	__u32 *member;
	int migrating = 0;

	/* Element 0 of an array always exists: these checks only satisfy
	 * the verifier.  SK_PASS without a choice lets the kernel select. */
	ctl = bpf_map_lookup_elem(RP_MAP(RP_FD_CTL), &zero);
	if (!ctl)
		return SK_PASS;
	gen = ctl->gen & 1;
	g = bpf_map_lookup_elem(RP_MAP(RP_FD_GENS), &gen);
	if (!g)
		return SK_PASS;

#ifdef RP_HAVE_MIGRATE
	/* A closing listener hands over a queued or half-open request. */
	migrating = md->migrating_sk != 0;
#endif

	/* Weighted table of the live generation. */
	slot = (gen << RP_SLOT_BITS) | (md->hash & RP_SLOT_MASK);
	member = bpf_map_lookup_elem(RP_MAP(RP_FD_SLOTS), &slot);
	if (member && *member < RP_MAX_MEMBERS) {
		idx = *member;
		if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0) {
			rp_count_member(idx, migrating ? RP_MIGRATED : RP_SELECTED);
			return SK_PASS;
		}
		/* Slot's socket closed (or being migrated away from). */
		gs = rp_group_stats();
		if (gs)
			gs->slot_misses++;
	} else {
		/* Slot names nobody: only a table with no live member does. */
		gs = rp_group_stats();
		if (gs)
			gs->empty_slots++;
	}

	/* Deterministic fallback over the live list. */
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
				rp_count_member(idx, migrating ? RP_MIGRATED : RP_FALLBACK);
				return SK_PASS;
			}
		}
	}

	/* No live member: the kernel's own selection takes over. */
	gs = rp_group_stats();
	if (gs)
		gs->no_live++;
	return SK_PASS;
}
