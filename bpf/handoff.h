/* SPDX-License-Identifier: GPL-2.0 */
/*
 * handoff.h: how a group's program hands what its short cut did not take
 * to the program every group shares (docs/decisions/0017).
 *
 * A group's program holds the short cut alone (a plain weighted group's
 * slot member; this CPU's member; an adaptive group's slot member while
 * the throttle does not name it; a known flow, and a new one), with its
 * maps as constants of its code, so the verifier walks it in about a
 * millisecond and the common cases pay nothing for the sharing.
 * Everything else (QUIC, RSS pins, a throttled member, a gone socket's
 * re-hashes and walk, migration) runs in the shared program, verified once
 * a boot: the group's program writes its slot, the draw the run places by
 * (datagram balance) and what the flow table knew of the datagram's flow
 * into this CPU's handoff, and tail-calls it.
 * The shared program finds the group's maps by the slot and goes on where
 * the short cut stopped, without judging the flow again.
 */
#ifndef RPCTL_HANDOFF_H
#define RPCTL_HANDOFF_H

#include "maps.h"
#include "flow.h"

#ifdef RP_SHARED
/* The flow pick the group's short cut left: the set again by the hash
 * (the other fields are the datagram's, or ctl's), its state from the
 * handoff. */
static __always_inline void rp_resume_flow(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_flow_pick *fp)
{
	struct rp_handoff *h = rp_handoff();
	struct sk_reuseport_md *m = md;
	__u32 hash, set;

	/* Through a copy clang cannot see through: it would otherwise keep
	 * &md->hash for the steps' reads of it, a ctx pointer with an offset,
	 * which the verifier refuses to read through. */
	asm volatile("" : "+r"(m));
	hash = m->hash;
	set = hash & (ctl->flow_table_size / RP_FLOW_WAYS - 1);

	if (!h || h->flow_state == RP_FLOW_NONE)
		return;
	fp->set = rp_flow_set(ctl, &set);
	if (!fp->set)
		return;
	fp->tag = hash | 1;
	fp->now = bpf_jiffies64();
	fp->idle = ctl->flow_idle_ticks;
	fp->state = h->flow_state;
}
#elif !defined(RP_ALL_STEPS)
/* Hand the selection to the shared program; SK_PASS without a choice (the
 * kernel's hash) only if it is not there. */
static __always_inline int rp_hand_off(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_flow_pick *fp)
{
	struct rp_handoff *h = rp_handoff();

	if (h) {
		h->slot = ctl->slot;
		h->flow_state = fp->state;
		bpf_tail_call_((u64)RP_MAP(RP_FD_PROGS), md, 0);
	}
	return SK_PASS;
}
#endif

/* A random draw for a group that balances datagram by datagram: the
 * group's program draws and leaves it in the handoff, where the shared
 * program finds it, so that both place by one value (a second draw would
 * judge another slot than the one the short cut found gone or throttled). */
static __always_inline __u32 rp_draw(void)
{
#ifdef RP_OWN
	return bpf_get_prandom_u32();
#else
	struct rp_handoff *h = rp_handoff();
	__u32 r;

	if (!h)
		return 0;
#ifdef RP_SHARED
	return h->hash;
#else
	r = bpf_get_prandom_u32();
	h->hash = r;
	return r;
#endif
#endif
}

/* What the run's slot, re-hashes and walk place by, fixed once a run: the
 * kernel's hash of the 4-tuple (a flow's datagrams keep their member), or,
 * in a group that balances datagram by datagram (RP_CTL_DATAGRAM), a
 * random draw (one source's datagrams spread by the weights).  A group's
 * program takes it only past its plain weighted lines and a known flow,
 * and the draw waits in the handoff rather than in a value kept across
 * the short cut's select for the tail call: either way, clang spilled
 * registers on the paths that do not need it (docs/decisions/0022). */
static __always_inline __u32 rp_run_hash(struct sk_reuseport_md *md, struct rp_ctl *ctl)
{
	return ctl->flags & RP_CTL_DATAGRAM ? rp_draw() : md->hash;
}

#endif /* RPCTL_HANDOFF_H */
