/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pick.h: what a step of steer.bpf.c does with a packet (takes it or
 * passes it on), the member it picks and which step picked it, and the
 * member counters that count the pick.
 */
#ifndef RPCTL_PICK_H
#define RPCTL_PICK_H

#include "maps.h"
#include "flow.h"


/* What a step did with the packet. */
enum rp_step {
	RP_NEXT,  /* passed it on to the next step */
	RP_TOOK,  /* a member's socket took it: the steps end */
};

/* Which step chose the member: the member counter it counts in. */
enum rp_outcome {
	RP_SELECTED,
	RP_FALLBACK,
	RP_MIGRATED,
	RP_PINNED,
	RP_FLOW,
	RP_QUIC_ROUTED,
};

/* What the steps chose, and what the flow table knew of the flow. */
struct rp_pick {
	__u32 idx;         /* the member a step chose (rp_took) */
	__u32 outcome;     /* enum rp_outcome: which step chose it */
	__u32 hash;        /* what the slot, re-hashes and walk place by (rp_run_hash) */
	struct rp_flow_pick flow;
	struct rp_run_maps maps;
};

/* A step selected member idx's socket: the pick says who and how. */
static __always_inline enum rp_step rp_took(struct rp_pick *p, __u32 idx, enum rp_outcome outcome)
{
	p->idx = idx;
	p->outcome = outcome;
	return RP_TOOK;
}

/* Whether the program runs for a request migrating from a closing
 * listener.  It has no arrival CPU or queue of its own (the program runs
 * on the CPU that closes the listener), so pins do not apply to it, and
 * it is not new work, so the throttle does not either. */
static __always_inline int rp_migrating(struct sk_reuseport_md *md)
{
#ifdef RP_HAVE_MIGRATE
	return md->migrating_sk != 0;
#else
	return 0;
#endif
}

/* Count a selection of member idx by the step `outcome` names in its
 * per-CPU counters (no other writer on this CPU: no atomics); returns
 * them (NULL only for an index out of range).  A constant outcome folds
 * to one add. */
static __always_inline struct rp_member_stats *rp_count(struct rp_pick *p, __u32 idx, enum rp_outcome outcome)
{
	struct rp_member_stats *st = bpf_map_lookup_elem(p->maps.member_stats, &idx);

	if (!st)
		return NULL;
	if (outcome == RP_SELECTED)
		st->selected++;
	else if (outcome == RP_FALLBACK)
		st->fallback++;
	else if (outcome == RP_MIGRATED)
		st->migrated++;
	else if (outcome == RP_PINNED)
		st->pinned++;
	else if (outcome == RP_QUIC_ROUTED)
		st->quic_routed++;
	else
		st->flow_datagrams++;
	return st;
}


#endif /* RPCTL_PICK_H */
