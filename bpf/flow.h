/* SPDX-License-Identifier: GPL-2.0 */
/*
 * flow.h: the UDP flow table of a group with flow affinity (map "flows",
 * docs/decisions/0010).  A flow lives in set md->hash & (sets - 1),
 * tagged md->hash | 1, in one of the set's RP_FLOW_WAYS ways; only the
 * program writes the table.  A step finds a datagram's flow
 * (rp_flow_find) and refreshes a fresh one it took (rp_flow_touch); the
 * program's one exit remembers where the steps placed a flow the table
 * did not know (rp_flow_remember).
 */
#ifndef RPCTL_FLOW_H
#define RPCTL_FLOW_H

#include "maps.h"

/* What the flow table knew of a datagram's flow, and so what the exit
 * remembers once a step has chosen. */
enum rp_flow_state {
	RP_FLOW_NONE,      /* nothing to remember: TCP, no flow affinity, a flow kept */
	RP_FLOW_NEW,       /* not in the table */
	RP_FLOW_IDLE,      /* in the table, unseen for the idle timeout: as new */
	RP_FLOW_GONE,      /* its member's socket closed or was replaced */
};

/* A datagram's flow: its set, and what the table knew of it. */
struct rp_flow_pick {
	struct rp_flow_set *set;  /* the set of the flow's hash */
	__u32 tag;         /* md->hash | 1 */
	__u32 state;       /* enum rp_flow_state */
	__u32 way;         /* IDLE, GONE: the way that holds the flow */
	__u32 now;         /* jiffies now (32 bits) */
	__s32 idle;        /* the idle timeout in jiffies */
};

/* Ticks since way w of the pick's set was refreshed; negative when another
 * CPU refreshed it after this program read the clock. */
static __always_inline __s32 rp_flow_age(struct rp_flow_pick *fp, __u32 w)
{
	return (__s32)(fp->now - fp->set->way[w & (RP_FLOW_WAYS - 1)].seen);
}

/* Whether flow f is still on the socket it was placed on: the incarnation
 * tells the member's socket from a socket that took its index later (and
 * RP_NO_INCARNATION an index of no member). */
static __always_inline int rp_flow_on_its_socket(struct rp_flow *f, struct rp_gen *g)
{
	return f->member < RP_MAX_MEMBERS && f->incarnation != RP_NO_INCARNATION &&
	       f->incarnation == g->incarnation[f->member & (RP_MAX_MEMBERS - 1)];
}

/* The way of this datagram's flow in its set: fills fp (set, tag, clock)
 * and returns the way, with fp->state GONE for the caller to judge, or
 * NULL with fp->state NEW (NONE: only a damaged ctl).  One array lookup
 * and the set's two lines: its ways compared in turn. */
static __always_inline struct rp_flow *rp_flow_find(struct sk_reuseport_md *md, struct rp_ctl *ctl,
						    struct rp_flow_pick *fp)
{
	__u32 set = md->hash & (ctl->flow_table_size / RP_FLOW_WAYS - 1), w;

	/* Every field defined on every path: clang otherwise carries an
	 * unset register into a shared exit, which the verifier refuses. */
	fp->way = 0;
	fp->tag = md->hash | 1;
	/* jiffies, not a clock helper: the verifier inlines this one into a
	 * load (decision 0010). */
	fp->now = bpf_jiffies64();
	fp->idle = ctl->flow_idle_ticks;
	fp->set = rp_lookup(RP_GROUP_MAP(RP_FD_FLOWS), &set);
	if (!fp->set) {
		/* Nothing to remember.  Said here, not only left so: the
		 * verifier reads ctl->flags anew at every test, so it follows
		 * a pick here twice (the short cut's lookup, then the QUIC
		 * step's rp_flow_keep), and must not pair a set this lookup
		 * did not get with the state the first one left. */
		fp->state = RP_FLOW_NONE;
		return NULL;
	}
	fp->state = RP_FLOW_NEW;
#pragma unroll
	for (w = 0; w < RP_FLOW_WAYS; w++) {
		if (fp->set->way[w].tag == fp->tag) {
			fp->way = w;
			fp->state = RP_FLOW_GONE;
			return &fp->set->way[w];
		}
	}
	return NULL;
}

/* A fresh flow's datagram that its member took: the way's last-seen tick
 * is refreshed in place only once a quarter of the idle timeout has
 * passed, and its "seen again" flag set on its second datagram, so that
 * a busy flow does not write its shared line on every datagram. */
static __always_inline void rp_flow_touch(struct rp_flow_pick *fp, struct rp_flow *f, __s32 age)
{
	if (age > fp->idle >> 2)
		f->seen = fp->now;
	if (!(f->flags & RP_FLOW_AGAIN))
		f->flags = RP_FLOW_AGAIN;
}

/* A QUIC packet its server id sent to member idx: its 4-tuple is a flow
 * of idx from now on, so that the member's live flows (what a drain waits
 * for) count its connections, on every path they use (a migrated
 * connection's new 4-tuple too).  A fresh entry of idx is refreshed like
 * a followed flow's; any other makes fp say what the exit remembers. */
static __always_inline void rp_flow_keep(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
					 struct rp_flow_pick *fp, __u32 idx)
{
	struct rp_flow *f = rp_flow_find(md, ctl, fp);
	__s32 age;

	if (!f)
		return;
	if (f->member != idx || f->incarnation != g->incarnation[idx & (RP_MAX_MEMBERS - 1)])
		return;  /* GONE: remembered on idx */
	age = rp_flow_age(fp, fp->way);
	if (age > fp->idle) {
		fp->state = RP_FLOW_IDLE;
		return;
	}
	rp_flow_touch(fp, f, age);
	fp->state = RP_FLOW_NONE;
}

/* The way a new flow takes in its set, by what the way holds: an empty
 * way, else a flow idle past the timeout, else one whose member left (its
 * incarnation differs: the flow would be placed again anyway), else the
 * flow seen once that was seen longest ago, and only else the flow seen
 * again that was seen longest ago.  A flow seen again is a session (a
 * long-lived flow refreshes its time only every quarter of the timeout,
 * so its age alone would misjudge it); one-shot flows are what fill
 * sets.  Giving away a live flow's way is an eviction, counted. */
enum rp_flow_victim {
	RP_VICTIM_IDLE,
	RP_VICTIM_ORPHAN,
	RP_VICTIM_ONCE,
	RP_VICTIM_AGAIN,
	RP_VICTIM_NONE,
};

static __always_inline __u32 rp_flow_way(struct rp_flow_pick *fp, struct rp_gen *g)
{
	__u32 w, best = 0, kind, best_kind = RP_VICTIM_NONE;
	__s32 age, best_age = -1;
	struct rp_flow *f;

#pragma unroll
	for (w = 0; w < RP_FLOW_WAYS; w++) {
		f = &fp->set->way[w];
		if (!f->tag)
			return w;
		age = rp_flow_age(fp, w);
		if (age > fp->idle)
			kind = RP_VICTIM_IDLE;
		else if (f->incarnation != g->incarnation[f->member & (RP_MAX_MEMBERS - 1)])
			kind = RP_VICTIM_ORPHAN;
		else if (!(f->flags & RP_FLOW_AGAIN))
			kind = RP_VICTIM_ONCE;
		else
			kind = RP_VICTIM_AGAIN;
		if (kind < best_kind || (kind == best_kind && age > best_age)) {
			best = w;
			best_kind = kind;
			best_age = age;
		}
	}
	if (best_kind >= RP_VICTIM_ONCE)
		rp_count_group(flow_evictions);
	return best;
}

/* The flow goes to member idx from now on.  An idle or orphaned flow
 * keeps its way; a new one takes rp_flow_way's.  The tag is written last,
 * so that a reader on another CPU rarely sees a way half written (two
 * CPUs writing one way at once is not excluded: the loser's flow is
 * placed again when it sends next). */
static __always_inline void rp_flow_remember(struct rp_flow_pick *fp, struct rp_gen *g, __u32 idx)
{
	__u32 w = fp->state == RP_FLOW_NEW ? rp_flow_way(fp, g) : fp->way;
	struct rp_flow *f = &fp->set->way[w & (RP_FLOW_WAYS - 1)];

	f->member = idx;
	f->flags = 0;
	f->incarnation = g->incarnation[idx & (RP_MAX_MEMBERS - 1)];
	f->seen = fp->now;
	f->tag = fp->tag;
}

#endif /* RPCTL_FLOW_H */
