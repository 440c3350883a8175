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
 * a boot: the group's program writes its slot, and what the flow table
 * knew of the datagram's flow, into this CPU's handoff, and tail-calls it.
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

#endif /* RPCTL_HANDOFF_H */
