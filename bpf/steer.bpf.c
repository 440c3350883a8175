// SPDX-License-Identifier: GPL-2.0
/*
 * steer.bpf.c: the SK_REUSEPORT programs of rpctl's groups.
 *
 * For every new TCP connection (SYN) or UDP datagram that reaches the
 * reuseport group, pick a socket from the group's socket array.  With the
 * live ctl and generation looked up, the program runs, in this order:
 *   short cut (rp_short_cut): the common cases in straight lines of code:
 *      step 5 of a plain weighted group; then, in a group without QUIC, a
 *      known flow (step 2) and the first choice of steps 3 to 5 (this
 *      CPU's member, or the slot's member unless throttled), a new flow
 *      remembered on it.  A group's own program holds it alone and hands
 *      the rest to the steps of the program all groups share (handoff.h);
 *   1. QUIC groups (RP_CTL_QUIC): a Handshake or short-header packet goes
 *      to the member whose QUIC-LB server id its connection id carries,
 *      whatever its 4-tuple, while that member's socket lives (draining or
 *      not), and its 4-tuple becomes (or stays) a flow of that member.
 *      Initial and 0-RTT packets (ids the client chose), unroutable ids
 *      and ids that name no live member (counted) go on;
 *   2. UDP groups with flow affinity (RP_CTL_FLOWS): a datagram of a flow
 *      in the flow table, fresh, whose member's socket lives (the same
 *      socket: same incarnation) goes to that member, even a draining or
 *      weightless one.  The exit remembers whatever a later step chooses;
 *   3. pinned modes: the member pinned to the CPU the program runs on
 *      (CPU mode), or to the receive queue the NIC's RSS put the packet on
 *      (RSS mode).  A CPU or queue whose member is draining or gone, or
 *      that has none, goes on, counted;
 *   4. adaptive groups: if rpctl serve has throttled the slot's member
 *      (step 5's; its queue built while others' did not) and the
 *      throttle's lease runs, the re-hashes of step 6 skipping throttled
 *      members: its share spreads over the others in proportion to their
 *      weights (docs/decisions/0013).  A flow of step 2 or a server id's
 *      member of step 1 is never moved by it;
 *   5. the member named by the live weighted slot table at hash & mask;
 *   6. if that socket is gone (closed since the last publish: the kernel
 *      emptied its array entry), the same table at up to RP_REHASH_TRIES
 *      re-mixed hashes of the flow: the gone member's share spreads over
 *      the live members in proportion to their weights
 *      (docs/decisions/0009), deterministic for a flow; in an adaptive
 *      group, skipping throttled members as in step 4;
 *   7. if every re-hash met a gone (or throttled) socket too, the first
 *      member that takes it, walking at most RP_FALLBACK_TRIES entries of
 *      the live list from hash % n_live: deterministic for a flow, never a
 *      draining member;
 *   exit: the member a step chose is counted, and a UDP flow the table
 *      did not know is remembered on it (rp_count_pick); if no step took
 *      the packet (no member is live), SK_PASS without a choice: the
 *      kernel's own hash selection takes over, and the group counter says
 *      so.
 * "hash" in steps 5 to 7 is the run's (rp_run_hash): the kernel's hash of
 * the 4-tuple, or one random draw in a group that balances datagram by
 * datagram (RP_CTL_DATAGRAM), so that one source's datagrams spread.
 * A step either takes the packet (RP_TOOK: a member's socket is selected,
 * the steps end) or passes it on (RP_NEXT).  A request migrating from a
 * closing listener skips steps 3 and 4 and counts as migrated
 * (rp_migrating).  Unregistered sockets of the port are never in the
 * array, so while any member is live they get nothing (hijack protection).
 *
 * Compiled by bcc (every function inlined: bcc 0.26 does not load
 * BPF-to-BPF calls) as a group's program, the shared one (-DRP_SHARED),
 * or, for comparison, a group's program with every step (-DRP_OWN).
 */
#include <uapi/linux/bpf.h>
#include "rpctl.h"
#include "maps.h"
#include "flow.h"
#include "pick.h"
#include "quic.h"
#include "rss.h"
#include "handoff.h"

/* Re-hashes into the weighted table when a slot's socket is gone.  Each
 * meets a gone member with the probability p of the gone members' share
 * of the slots, so the live-list walk takes p^8 of their traffic
 * (docs/decisions/0009).  Each try is one helper call, like a step of the
 * walk. */
#define RP_REHASH_TRIES 8

/* The fallback walk is bounded so the verifier can follow it: each try is
 * a helper call whose result forks the verifier's state.  A walk only
 * meets dead entries for members that closed since the last publish. */
#define RP_FALLBACK_TRIES 16

/* The member of the run's slot in the live weighted table. */
static __always_inline __u32 rp_slot(struct rp_pick *p, struct rp_gen *g)
{
	return g->slots[p->hash & RP_SLOT_MASK];
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

/* The throttle of an adaptive group, for new work; NULL otherwise.  Its
 * bits hold only while its lease runs (rp_lease_over). */
static __always_inline struct rp_throttle *rp_throttle(struct sk_reuseport_md *md, struct rp_ctl *ctl)
{
	__u32 zero = 0;

	if (!(ctl->flags & RP_CTL_ADAPTIVE) || rp_migrating(md))
		return NULL;
	return rp_lookup(RP_GROUP_MAP(RP_FD_THROTTLE), &zero);
}

/* Whether the throttle names member idx. */
static __always_inline int rp_throttled(struct rp_throttle *t, __u32 idx)
{
	return t->bits[(idx / 64) & (RP_MAX_MEMBERS / 64 - 1)] >> (idx % 64) & 1;
}

/* serve renews the throttle's lease at every sample: an expired one means
 * no serve looks at the queues any more, so the plain weights decide.  A
 * helper call: tested after the bits. */
static __always_inline int rp_lease_over(struct rp_throttle *t)
{
	return bpf_ktime_get_ns() > t->lease_ns;
}

/* The member pinned to CPU or queue `key` in the live generation: with
 * RP_PIN_UNAVAILABLE when it takes nothing now, RP_NO_MEMBER (which has
 * that bit too) when nobody is pinned there. */
static __always_inline __u32 rp_pin(struct rp_gen *g, __u32 key)
{
	return key < RP_MAX_PINS ? g->pin[key & (RP_MAX_PINS - 1)] : RP_NO_MEMBER;
}

/* Re-hash into the weighted table, proportional to the weights: select
 * the member of the first re-hashed slot whose socket lives and that `t`
 * (when given) does not throttle.  Unrolled, and each try's failure falls
 * through to the next, so the verifier walks straight-line code. */
static __always_inline enum rp_step rp_rehash(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_throttle *t,
					      struct rp_pick *p)
{
	__u32 idx, i;

#pragma unroll
	for (i = 0; i < RP_REHASH_TRIES; i++) {
		idx = g->slots[rp_rehash_slot(p->hash, i)];
		if (t && rp_throttled(t, idx))
			continue;
		if (rp_select_member(md, p->maps.socks, &idx))
			return rp_took(p, idx, RP_FALLBACK);
	}
	return RP_NEXT;
}

/* Step 1: a packet whose connection id the server chose goes to the
 * member its server id names: connection migration and NAT rebinding
 * change the 4-tuple, not the id. */
static __always_inline enum rp_step rp_quic_step(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
						 struct rp_pick *p)
{
	__u32 sid, idx;

	if (!rp_quic_server_id(md, ctl->quic_sid_len, &sid))
		return RP_NEXT;
	if (rp_quic_member(g, sid, &idx) && rp_select_member(md, p->maps.socks, &idx)) {
		if (ctl->flags & RP_CTL_FLOWS)
			rp_flow_keep(md, ctl, g, &p->flow, idx);
		return rp_took(p, idx, RP_QUIC_ROUTED);
	}
	/* No member has this id, or its socket closed. */
	rp_count_group(quic_unknown_server_id);
	return RP_NEXT;
}

/* Step 2: the member the datagram's flow was placed on.  Otherwise
 * p->flow says what the table knew, for the exit to remember. */
static __always_inline enum rp_step rp_flow_step(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
						 struct rp_pick *p)
{
	struct rp_flow *f = rp_flow_find(md, ctl, &p->flow);
	__u32 idx;
	__s32 age;

	if (!f)
		return RP_NEXT;
	age = rp_flow_age(&p->flow, f);
	if (age > p->flow.idle) {
		p->flow.state = RP_FLOW_IDLE;
		return RP_NEXT;
	}
	/* Off the socket it was placed on, or that socket closed: GONE. */
	idx = f->member;
	if (!rp_flow_on_its_socket(f, g) || !rp_select_member(md, p->maps.socks, &idx))
		return RP_NEXT;
	rp_flow_touch(&p->flow, f, age);
	return rp_took(p, idx, RP_FLOW);
}

/* Step 3: the member of this CPU or queue.  When none takes the packet,
 * the group counter names why. */
static __always_inline enum rp_step rp_pinned_step(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_pick *p)
{
	__u32 key, idx;

	if (g->mode == RP_MODE_CPU) {
		key = bpf_get_smp_processor_id();
	} else if (!rp_rss_queue(md, g, &key)) {
		rp_count_group(rss_unhashed);
		return RP_NEXT;
	}
	idx = rp_pin(g, key);
	if (idx == RP_NO_MEMBER) {
		/* Nobody is pinned to this CPU or queue. */
		rp_count_group(pin_unassigned);
		return RP_NEXT;
	}
	/* RP_PIN_UNAVAILABLE makes idx an invalid key: a draining member is
	 * never selected, a gone one's entry is empty; both fall back. */
	if (!(idx & RP_PIN_UNAVAILABLE) && rp_select_member(md, p->maps.socks, &idx))
		return rp_took(p, idx, RP_PINNED);
	rp_count_group(pin_fallbacks);
	return RP_NEXT;
}

/* Step 4: the slot's member throttled while the lease runs: an
 * unthrottled member of the re-hashed table.  When every try meets a
 * throttled or gone member, step 5 selects the slot's member after all (a
 * throttle never refuses work). */
static __always_inline enum rp_step rp_throttle_step(struct sk_reuseport_md *md, struct rp_ctl *ctl,
						     struct rp_gen *g, struct rp_pick *p)
{
	struct rp_throttle *t = rp_throttle(md, ctl);

	if (!t || !g->n_live || !rp_throttled(t, rp_slot(p, g)) || rp_lease_over(t))
		return RP_NEXT;
	rp_count_group(throttle_skips);
	return rp_rehash(md, g, t, p);
}

/* Step 5: the slot's member (the table names nobody while no member is
 * live). */
static __always_inline enum rp_step rp_slot_step(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_pick *p)
{
	__u32 idx = rp_slot(p, g);

	if (!g->n_live || !rp_select_member(md, p->maps.socks, &idx))
		return RP_NEXT;
	return rp_took(p, idx, RP_SELECTED);
}

/* Step 6: the slot's socket is gone (or being migrated away from).  The
 * throttle, n_live and md's fields are read again, not kept from earlier
 * steps: a value kept across their helper calls would have clang spill
 * registers (docs/decisions/0009). */
static __always_inline enum rp_step rp_rehash_step(struct sk_reuseport_md *md, struct rp_ctl *ctl,
						   struct rp_gen *g, struct rp_pick *p)
{
	struct rp_throttle *t;

	if (!g->n_live)
		return RP_NEXT;
	rp_count_group(slot_misses);
	t = rp_throttle(md, ctl);
	return rp_rehash(md, g, t && !rp_lease_over(t) ? t : NULL, p);
}

/* Step 7: the last resort, a deterministic walk over the live list. */
static __always_inline enum rp_step rp_walk_step(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_pick *p)
{
	__u32 n = g->n_live, idx, start, i, j;

	if (n > RP_MAX_MEMBERS)
		n = RP_MAX_MEMBERS;
	if (!n)
		return RP_NEXT;
	start = p->hash % n;
	/* A constant trip count with no other exit, so clang unrolls it and
	 * the verifier walks straight-line code.  With fewer than
	 * RP_FALLBACK_TRIES live members, entries are tried again: harmless
	 * on this rare path. */
#pragma unroll
	for (i = 0; i < RP_FALLBACK_TRIES; i++) {
		/* A modulo, not "if (j >= n) j -= n": a branch here would
		 * double the verifier's states at every try. */
		j = (start + i) % n;
		/* clang knows j < n <= RP_MAX_MEMBERS and would drop the
		 * mask; the verifier does not, and needs it. */
		asm volatile("" : "+r"(j));
		idx = g->live[j & (RP_MAX_MEMBERS - 1)];
		if (rp_select_member(md, p->maps.socks, &idx))
			return rp_took(p, idx, RP_FALLBACK);
	}
	return RP_NEXT;
}

/* The exit after the steps: count the choice on its member (a migrating
 * request's as migrated, whichever step chose; step 3 never runs for one,
 * so a pinned pick is counted without reading md: decision 0010) and,
 * for a flow the table did not know or knew on a gone member, remember
 * it.  One exit, so the remembering (an 8-way set's victim choice) is
 * inlined once, not at every step that selects. */
static __always_inline void rp_count_pick(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_pick *p)
{
	enum rp_outcome outcome = p->outcome != RP_PINNED && rp_migrating(md) ? RP_MIGRATED : p->outcome;
	struct rp_member_stats *st = rp_count(p, p->idx, outcome);

	if (!st || p->flow.state == RP_FLOW_NONE || p->outcome == RP_FLOW)
		return;
	if (p->flow.state == RP_FLOW_GONE)
		st->flows_reassigned++;
	else
		st->flows_created++;
	rp_flow_remember(&p->flow, g, p->idx);
}

/* Steps 3 to 5 where they take the packet at once: the member of this
 * CPU (CPU mode), or the slot's member (weighted mode) unless the throttle
 * names it.  Not taken (nobody available on this CPU, a throttled or gone
 * slot member, RSS mode), the steps run in full and count why; a throttle
 * is judged there, its lease read (a helper call) only for a member it
 * names. */
static __always_inline enum rp_step rp_first_choice(struct sk_reuseport_md *md, struct rp_ctl *ctl,
						    struct rp_gen *g, struct rp_pick *p)
{
	__u32 idx;

	if (g->mode == RP_MODE_CPU) {
		idx = rp_pin(g, bpf_get_smp_processor_id());
		if (idx & RP_PIN_UNAVAILABLE || !rp_select_member(md, p->maps.socks, &idx))
			return RP_NEXT;
		return rp_took(p, idx, RP_PINNED);
	}
	if (g->mode != RP_MODE_WEIGHTED)
		return RP_NEXT;
	if (ctl->flags & RP_CTL_ADAPTIVE) {
		struct rp_throttle *t = rp_throttle(md, ctl);

		if (t && rp_throttled(t, rp_slot(p, g)))
			return RP_NEXT;
	}
	return rp_slot_step(md, g, p);
}

/* The common cases ahead of the steps, in straight lines of code that
 * jump over no other step's (why: docs/decisions/0010), first a plain
 * weighted group's slot member (step 5 by md->hash, counted at once: no
 * flow to remember).  Step 5 is written out there rather than called:
 * through rp_slot_step, clang moved the count out of line (decision 0010).
 * Then, in a group without QUIC, for a request that is not migrating: a
 * known flow (step 2), and otherwise the first choice of steps 3 to 5 by
 * the run's hash, taken only there (taken first, it cost the paths above
 * a spill), counted and its flow remembered by the steps' exit.  A group's
 * program holds this alone (docs/decisions/0017), and hands on the rest. */
static __always_inline enum rp_step rp_short_cut(struct sk_reuseport_md *md, struct rp_ctl *ctl,
						 struct rp_gen *g, struct rp_pick *p)
{
	__u32 idx;

	if (!(ctl->flags & (RP_CTL_QUIC | RP_CTL_FLOWS | RP_CTL_ADAPTIVE | RP_CTL_DATAGRAM)) &&
	    g->mode == RP_MODE_WEIGHTED && !rp_migrating(md) && g->n_live) {
		idx = g->slots[md->hash & RP_SLOT_MASK];
		if (!rp_select_member(md, p->maps.socks, &idx))
			return RP_NEXT;
		rp_count(p, idx, RP_SELECTED);
		return RP_TOOK;
	}
	if (ctl->flags & RP_CTL_QUIC || rp_migrating(md))
		return RP_NEXT;
	if (ctl->flags & RP_CTL_FLOWS) {
		if (rp_flow_step(md, ctl, g, p) == RP_TOOK) {
			rp_count(p, p->idx, RP_FLOW);
			return RP_TOOK;
		}
	}
	p->hash = rp_run_hash(md, ctl);
	if (rp_first_choice(md, ctl, g, p) != RP_TOOK)
		return RP_NEXT;
	rp_count_pick(md, g, p);
	return RP_TOOK;
}

/* Steps 1 to 7 in turn, each where it applies, until one takes the
 * packet. */
static __always_inline enum rp_step rp_steps(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
					     struct rp_pick *p)
{
	if (ctl->flags & RP_CTL_QUIC && rp_quic_step(md, ctl, g, p) == RP_TOOK)
		return RP_TOOK;
	/* Other flow groups took step 2 on the short cut. */
	if (ctl->flags & RP_CTL_QUIC && ctl->flags & RP_CTL_FLOWS && rp_flow_step(md, ctl, g, p) == RP_TOOK)
		return RP_TOOK;
	if (g->mode != RP_MODE_WEIGHTED && !rp_migrating(md) && rp_pinned_step(md, g, p) == RP_TOOK)
		return RP_TOOK;
	if (ctl->flags & RP_CTL_ADAPTIVE && !rp_migrating(md) && rp_throttle_step(md, ctl, g, p) == RP_TOOK)
		return RP_TOOK;
	if (rp_slot_step(md, g, p) == RP_TOOK)
		return RP_TOOK;
	if (rp_rehash_step(md, ctl, g, p) == RP_TOOK)
		return RP_TOOK;
	return rp_walk_step(md, g, p);
}

int rp_select(struct sk_reuseport_md *md)
{
	/* Every field defined before any step: clang carries the struct
	 * into the one exit below, and the verifier refuses a read of a
	 * field some path left unset. */
	struct rp_pick p = {.flow.state = RP_FLOW_NONE};
	struct rp_ctl *ctl;
	struct rp_gen *g;
	__u32 zero = 0, gen;

	/* Element 0 of an array always exists: these checks only satisfy
	 * the verifier.  SK_PASS without a choice lets the kernel select. */
	if (!rp_find_run_maps(&p.maps))
		return SK_PASS;
	ctl = bpf_map_lookup_elem(p.maps.ctl, &zero);
	if (!ctl)
		return SK_PASS;
	gen = ctl->gen & 1;
	g = bpf_map_lookup_elem(p.maps.gens, &gen);
	if (!g)
		return SK_PASS;
#ifdef RP_SHARED
	p.hash = rp_run_hash(md, ctl);
	rp_resume_flow(md, ctl, &p.flow);
#else
	if (rp_short_cut(md, ctl, g, &p) == RP_TOOK)
		return SK_PASS;
#endif
#ifndef RP_ALL_STEPS
	return rp_hand_off(md, ctl, &p.flow);
#endif
#ifdef RP_OWN
	/* A datagram group's draw is the short cut's (it always gets there). */
	if (!(ctl->flags & RP_CTL_DATAGRAM))
		p.hash = md->hash;
#endif
	if (rp_steps(md, ctl, g, &p) == RP_TOOK)
		rp_count_pick(md, g, &p);
	else
		rp_count_group(no_live_member);
	return SK_PASS;
}
