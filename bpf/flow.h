/* SPDX-License-Identifier: GPL-2.0 */
/*
 * flow.h: the UDP flow table of a group with flow affinity (map "flows",
 * docs/decisions/0010).  A flow lives in set md->hash & (sets - 1),
 * tagged md->hash | 1, in one of the set's RP_FLOW_WAYS ways; only the
 * program writes the table, and a set fills from its first way: a new
 * flow takes the first empty way, a way is rewritten in place and only
 * user space empties one (when it clears a table), so no flow lies past an
 * empty way.  A step finds a datagram's flow (rp_flow_find) and refreshes
 * a fresh one it took (rp_flow_touch); the steps' exit remembers where
 * they placed a flow the table did not know (rp_flow_remember).
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
	__u32 now;         /* jiffies now (32 bits) */
	__s32 idle;        /* the idle timeout in jiffies */
};

/* Ticks since flow f was refreshed; negative when another CPU refreshed it
 * after this program read the clock. */
static __always_inline __s32 rp_flow_age(struct rp_flow_pick *fp, struct rp_flow *f)
{
	return (__s32)(fp->now - f->seen);
}

/* Whether flow f is still on the socket it was placed on: the incarnation
 * tells the member's socket from a socket that took its index later (and
 * RP_NO_INCARNATION an index of no member). */
static __always_inline int rp_flow_on_its_socket(struct rp_flow *f, struct rp_gen *g)
{
	return f->member < RP_MAX_MEMBERS && f->incarnation != RP_NO_INCARNATION &&
	       f->incarnation == g->incarnation[f->member & (RP_MAX_MEMBERS - 1)];
}

/* Set *set of the group's flow table.  The shared program finds a table of
 * the default size in the array of maps "flows", whose lookups the verifier
 * inlines, and one of any other size in "sized_flows" (made with
 * BPF_F_INNER_MAP, whose lookups are calls: store/shared_program.py).  A
 * group's program names its own table: of the default size, inlined too. */
static __always_inline struct rp_flow_set *rp_flow_set(struct rp_ctl *ctl, __u32 *set)
{
#ifdef RP_SHARED
	if (ctl->flow_table_size != RP_FLOW_TABLE_DEFAULT)
		return rp_lookup(RP_GROUP_MAP(RP_FD_SIZED_FLOWS), set);
#endif
	return rp_lookup(RP_GROUP_MAP(RP_FD_FLOWS), set);
}

/* The way of set s that holds `tag`, else the set's first empty way,
 * else RP_FLOW_WAYS (a full set). */
static __always_inline __u32 rp_flow_way(struct rp_flow_set *s, __u32 tag)
{
	__u32 w, t;

#pragma unroll
	for (w = 0; w < RP_FLOW_WAYS; w++) {
		t = s->way[w].tag;
		if (t == tag || !t)
			return w;
	}
	return RP_FLOW_WAYS;
}

/* This datagram's flow: fills fp (set, tag, clock) and returns the flow,
 * with fp->state GONE for the caller to judge, or NULL with fp->state NEW
 * (NONE: only a damaged ctl).  One array lookup and the set's lines, its
 * ways compared up to the first empty one.  Whoever remembers the flow
 * finds its way again (rp_flow_remember): the way is not carried, so the
 * verifier follows one path past here, not one per way. */
static __always_inline struct rp_flow *rp_flow_find(struct sk_reuseport_md *md, struct rp_ctl *ctl,
						    struct rp_flow_pick *fp)
{
	__u32 set = md->hash & (ctl->flow_table_size / RP_FLOW_WAYS - 1), w;

	fp->tag = md->hash | 1;
	/* jiffies, not a clock helper: the verifier inlines this one into a
	 * load (decision 0010). */
	fp->now = bpf_jiffies64();
	fp->idle = ctl->flow_idle_ticks;
	fp->set = rp_flow_set(ctl, &set);
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
	w = rp_flow_way(fp->set, fp->tag);
	if (w >= RP_FLOW_WAYS || fp->set->way[w].tag != fp->tag)
		return NULL;
	fp->state = RP_FLOW_GONE;
	return &fp->set->way[w];
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
	age = rp_flow_age(fp, f);
	if (age > fp->idle) {
		fp->state = RP_FLOW_IDLE;
		return;
	}
	rp_flow_touch(fp, f, age);
	fp->state = RP_FLOW_NONE;
}

/* 1 when a < b (signed, both within 2^62 of 0), else 0: in arithmetic,
 * not a branch (the verifier would follow each way's outcome apart, and
 * clang turns a comparison into one). */
static __always_inline __u64 rp_less(__s64 a, __s64 b)
{
	__u64 less = (__u64)(a - b);

	/* Hidden from clang both times: it would turn the shift into a
	 * comparison, and what multiplies by its 0 or 1 into a branch. */
	asm volatile("" : "+r"(less));
	less >>= 63;
	asm volatile("" : "+r"(less));
	return less;
}

/* The way a new flow takes in a full set, by what the way holds: a flow
 * idle past the timeout, else one whose member left (its incarnation
 * differs: the flow would be placed again anyway), else the flow seen once
 * that was seen longest ago, and only else the flow seen again that was
 * seen longest ago (the first such way on a tie).  A flow seen again is a
 * session (a long-lived flow refreshes its time only every quarter of the
 * timeout, so its age alone would misjudge it); one-shot flows are what
 * fill sets.  Giving away a live flow's way is an eviction, counted.
 *
 * Each way gets a score, larger for a better victim: its kind's rank
 * (idle 3, orphan 2, seen once 1, seen again 0), then its age (signed,
 * offset to sort as unsigned), then 7 - its index; the largest score names
 * the victim.  All in arithmetic, without a branch: the verifier follows
 * one path through the eight ways, so a group's program, verified for
 * every group, can hold it. */
static __always_inline __u32 rp_flow_victim(struct rp_flow_pick *fp, struct rp_gen *g)
{
	__u64 best = 0, score, rank, orphan, d;
	struct rp_flow *f;
	__u32 w;

#pragma unroll
	for (w = 0; w < RP_FLOW_WAYS; w++) {
		f = &fp->set->way[w];
		orphan = f->incarnation ^ g->incarnation[f->member & (RP_MAX_MEMBERS - 1)];
		orphan = (orphan + 0xffffffffULL) >> 32;           /* incarnations differ */
		asm volatile("" : "+r"(orphan));
		rank = (f->flags & RP_FLOW_AGAIN) ^ 1;             /* seen once: 1 */
		rank += orphan * (2 - rank);                       /* orphan: 2 */
		rank += rp_less(fp->idle, rp_flow_age(fp, f)) * (3 - rank);  /* idle: 3 */
		score = rank << 35 | (__u64)((__u32)rp_flow_age(fp, f) ^ 0x80000000u) << 3 | (RP_FLOW_WAYS - 1 - w);
		/* best = max(best, score) */
		d = score - best;
		best = score - (d & -rp_less(score, best));
	}
	if (best >> 35 <= 1)
		rp_count_group(flow_evictions);
	return RP_FLOW_WAYS - 1 - (best & (RP_FLOW_WAYS - 1));
}

/* The flow goes to member idx from now on, in its own way (IDLE, GONE),
 * the set's first empty way, or in a full set rp_flow_victim's.  The tag
 * is written last, so that a reader on another CPU rarely sees a way half
 * written (two CPUs writing one way at once is not excluded: the loser's
 * flow is placed again when it sends next). */
static __always_inline void rp_flow_remember(struct rp_flow_pick *fp, struct rp_gen *g, __u32 idx)
{
	__u32 w = rp_flow_way(fp->set, fp->tag);
	struct rp_flow *f;

	if (w >= RP_FLOW_WAYS)
		w = rp_flow_victim(fp, g);
	/* clang knows w < RP_FLOW_WAYS here and would drop the mask; the
	 * verifier does not, and needs it. */
	asm volatile("" : "+r"(w));
	f = &fp->set->way[w & (RP_FLOW_WAYS - 1)];
	f->member = idx;
	f->flags = 0;
	f->incarnation = g->incarnation[idx & (RP_MAX_MEMBERS - 1)];
	f->seen = fp->now;
	f->tag = fp->tag;
}

#endif /* RPCTL_FLOW_H */
