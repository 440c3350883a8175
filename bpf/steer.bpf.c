// SPDX-License-Identifier: GPL-2.0
/*
 * steer.bpf.c: the SK_REUSEPORT program of one rpctl group.
 *
 * For every new TCP connection (SYN) or UDP datagram that reaches the
 * reuseport group, pick a socket from the group's socket array:
 *   Q. QUIC groups (RP_CTL_QUIC): a Handshake or short-header packet goes
 *      to the member whose QUIC-LB server id its connection id carries,
 *      whatever its 4-tuple, while that member's socket lives (draining or
 *      not), and its 4-tuple becomes (or stays) a flow of that member.
 *      Initial and 0-RTT packets (ids the client chose), unroutable ids,
 *      and ids that name no live member (counted) go on (rp_select_quic);
 *   0. UDP groups with flow affinity (RP_CTL_FLOWS): a datagram of a flow
 *      in the flow table, fresh, whose member's socket lives (the same
 *      socket: same incarnation) goes to that member, even a draining or
 *      weightless one.  Other datagrams go on, and whatever steps 2-5
 *      choose is remembered for their flow (rp_flow_follow and
 *      rp_flow_remember);
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
 *      never refuses work).  Steps Q and 0 come first: a UDP flow the
 *      flow table knows, or a server id's member, is never moved by it;
 *   4. if that socket is gone (closed since the last publish: the kernel
 *      emptied its array entry), the same table again at up to
 *      RP_REHASH_TRIES re-mixed hashes of the flow: the dead member's share
 *      spreads over the live members in proportion to their weights
 *      (docs/decisions/0009), deterministic for a flow; in an adaptive
 *      group, skipping throttled members as in step 3;
 *   5. if every re-hash met a gone (or throttled) socket too, the first member that takes
 *      it, walking at most RP_FALLBACK_TRIES entries of the live list from
 *      hash % n_live: deterministic for a flow, never a draining member;
 *   6. if no member is live, SK_PASS without a choice: the kernel's own
 *      hash selection takes over (and the group counter says so).
 * Ahead of the steps, rp_short_cut takes the two common cases in straight
 * lines of code: a plain weighted group's slot member (step 3 without
 * anything before it), and a known flow of a flow group without QUIC
 * (step 0, which for those groups is done there: a miss goes on to step
 * 1 with what the table knew); anything else goes through the steps.
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
	RP_FLOW,
	RP_QUIC_ROUTED,
};

/* What the flow table knew of a datagram's flow (step 0), and so what
 * must be remembered once steps 2-5 have chosen. */
enum rp_flow_state {
	RP_FLOW_NONE,      /* TCP, or a group without flow affinity */
	RP_FLOW_NEW,       /* not in the table */
	RP_FLOW_IDLE,      /* in the table, unseen for the idle timeout: as new */
	RP_FLOW_GONE,      /* its member's socket closed or was replaced */
};

struct rp_flow_pick {
	struct rp_flow_set *set;  /* the set of the flow's hash */
	__u32 tag;         /* md->hash | 1 */
	__u32 state;       /* enum rp_flow_state */
	__u32 way;         /* IDLE, GONE: the way that holds the flow */
	__u32 now;         /* jiffies now (32 bits) */
	__s32 idle;        /* the idle timeout in jiffies */
	__u32 idx;         /* the member a step chose (rp_took) */
	__u32 outcome;     /* enum rp_outcome: which step chose it */
};

static __always_inline struct rp_group_stats *rp_group_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(RP_MAP(RP_FD_GROUP_STATS), &zero);
}

/* Ticks since way w of the pick's set was refreshed; negative when another
 * CPU refreshed it after this program read the clock. */
static __always_inline __s32 rp_flow_age(struct rp_flow_pick *fp, __u32 w)
{
	return (__s32)(fp->now - fp->set->way[w & (RP_FLOW_WAYS - 1)].seen);
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
	struct rp_group_stats *gs;
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
	if (best_kind >= RP_VICTIM_ONCE) {
		gs = rp_group_stats();
		if (gs)
			gs->flow_evictions++;
	}
	return best;
}

/* Step 0's second half: the flow goes to idx from now on.  An idle or
 * orphaned flow keeps its way; a new one takes rp_flow_way's.  The tag is
 * written last, so that a reader on another CPU rarely sees a way half
 * written (two CPUs writing one way at once is not excluded: the loser's
 * flow is placed again when it sends next). */
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

/* A step selected member idx's socket.  Returns 0, the steps' "took it". */
static __always_inline int rp_took(struct rp_flow_pick *fp, __u32 idx, enum rp_outcome outcome)
{
	fp->idx = idx;
	fp->outcome = outcome;
	return 0;
}

/* Count a selection of member idx by the step `outcome` names in its
 * per-CPU counters; returns them (NULL only for an index out of range).
 * A constant outcome folds to one add. */
static __always_inline struct rp_member_stats *rp_count(__u32 idx, enum rp_outcome outcome)
{
	struct rp_member_stats *st = bpf_map_lookup_elem(RP_MAP(RP_FD_MEMBER_STATS), &idx);

	if (!st)
		return NULL;
	/* Per-CPU values: no other writer on this CPU, no atomics needed. */
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

/* Count the selection the steps made; with a flow to remember, remember
 * it.  rp_select's one exit after the steps calls it: the remembering
 * (an 8-way set's victim choice) is inlined once, not at every step that
 * selects. */
static __always_inline void rp_count_member(struct rp_gen *g, struct rp_flow_pick *fp)
{
	struct rp_member_stats *st = rp_count(fp->idx, fp->outcome);

	if (!st || fp->state == RP_FLOW_NONE || fp->outcome == RP_FLOW)
		return;
	if (fp->state == RP_FLOW_GONE)
		st->flows_reassigned++;
	else
		st->flows_created++;
	rp_flow_remember(fp, g, fp->idx);
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
	/* jiffies: the verifier inlines this helper into one load, where a
	 * clock read cost a call (about 35 ns a datagram, decision 10). */
	fp->now = bpf_jiffies64();
	fp->idle = ctl->flow_idle_ticks;
	fp->set = bpf_map_lookup_elem(RP_MAP(RP_FD_FLOWS), &set);
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

/* Step 0: the member that the flow of this datagram was placed on.
 * Returns 0 when it took the datagram; otherwise fp->state says what the
 * table knew, and steps 2-5 place the datagram. */
static __always_inline int rp_flow_follow(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
					  struct rp_flow_pick *fp)
{
	struct rp_flow *f = rp_flow_find(md, ctl, fp);
	__u32 idx;
	__s32 age;

	if (!f)
		return -1;
	age = rp_flow_age(fp, fp->way);
	if (age > fp->idle) {
		fp->state = RP_FLOW_IDLE;
		return -1;
	}
	idx = f->member;
	/* The incarnation tells the member's socket from a socket that took
	 * its index later (and RP_NO_INCARNATION an index of no member). */
	if (idx >= RP_MAX_MEMBERS || f->incarnation == RP_NO_INCARNATION ||
	    f->incarnation != g->incarnation[idx & (RP_MAX_MEMBERS - 1)])
		return -1;
	/* Fails when the socket closed: the kernel emptied its entry. */
	if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0))
		return -1;
	rp_flow_touch(fp, f, age);
	return rp_took(fp, idx, RP_FLOW);
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

/* A QUIC packet its server id sent to member idx: its 4-tuple is a flow
 * of idx from now on, so that the member's live flows (what a drain waits
 * for) count its connections, on every path they use (a migrated
 * connection's new 4-tuple too).  A fresh entry of idx is refreshed like
 * in step 0; any other makes fp say what rp_count_member remembers. */
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

/* QUIC (RFC 9000, 17.2; RFC 9369 for version 2).  Bytes of the UDP payload
 * the program reads: a long header's first byte, version and DCID length,
 * then the connection id's first octet and at most RP_QUIC_MAX_SID_LEN
 * server id bytes.  Every QUIC packet that carries a server-chosen id is
 * longer (a short header adds a packet number and a 16-byte AEAD tag). */
#define RP_QUIC_LONG_DCID 6     /* 1 + version (4) + DCID length (1) */
#define RP_QUIC_SHORT_DCID 1
#define RP_QUIC_PEEK (RP_QUIC_LONG_DCID + 1 + RP_QUIC_MAX_SID_LEN)
#define RP_QUIC_LONG_HEADER 0x80
#define RP_QUIC_V1 0x00000001
#define RP_QUIC_V2 0x6b3343cf
#define RP_QUIC_HANDSHAKE_V1 2  /* long packet types: bits 5-4 of byte 0 */
#define RP_QUIC_HANDSHAKE_V2 3
#define RP_QUIC_UNROUTABLE 7    /* config rotation bits 0b111 */
#define RP_UDP_HEADER 8         /* md->data points at the UDP header */

/* The server id after a connection id's first octet (len bytes, big
 * endian); -1 when its config rotation bits say unroutable. */
static __always_inline int rp_quic_sid(const __u8 *cid, __u32 len, __u32 *sid)
{
	__u32 v = 0, i;

	if (cid[0] >> 5 == RP_QUIC_UNROUTABLE)
		return -1;
#pragma unroll
	for (i = 0; i < RP_QUIC_MAX_SID_LEN; i++)
		if (i < len)
			v = v << 8 | cid[1 + i];
	*sid = v;
	return 0;
}

/* The member index of server id sid: a lower bound over the sorted
 * quic_ids in a fixed 8 halvings (RP_MAX_MEMBERS entries), then one
 * compare.  Returns 0 and sets *idx, or -1. */
static __always_inline int rp_quic_member(struct rp_gen *g, __u32 sid, __u32 *idx)
{
	__u64 want = (__u64)sid << 32, e;
	__u32 pos = 0, step;

#pragma unroll
	for (step = RP_MAX_MEMBERS / 2; step; step >>= 1)
		if (g->quic_ids[(pos + step - 1) & (RP_MAX_MEMBERS - 1)] < want)
			pos += step;
	e = g->quic_ids[pos & (RP_MAX_MEMBERS - 1)];
	if (e == RP_QUIC_NO_ID || e >> 32 != sid)
		return -1;
	*idx = (__u32)e;
	return 0;
}

/* QUIC groups: a packet whose connection id the server chose (Handshake,
 * short header) goes to the member its server id names, while that
 * member's socket lives: connection migration and NAT rebinding change
 * the 4-tuple, not the id.  Initial and 0-RTT packets carry an id the
 * client made up, and other versions are unknown: the flow table and
 * weights place them.  Returns 0 when it took the datagram. */
static __always_inline int rp_select_quic(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
					  struct rp_flow_pick *fp)
{
	struct rp_group_stats *gs;
	__u8 b[RP_QUIC_PEEK];
	__u32 version, type, sid, idx, len = ctl->quic_sid_len;

	const __u8 *data = md->data, *end = md->data_end;
	__u32 i;

	/* In place when the skb's linear part holds the bytes (a helper call
	 * less on every datagram); else through the helper, which also reads
	 * paged data.  Too short for a server-chosen id: not one. */
	if (data + RP_UDP_HEADER + RP_QUIC_PEEK <= end) {
#pragma unroll
		for (i = 0; i < RP_QUIC_PEEK; i++)
			b[i] = data[RP_UDP_HEADER + i];
	} else if (bpf_skb_load_bytes(md, RP_UDP_HEADER, b, RP_QUIC_PEEK)) {
		return -1;
	}
	if (b[0] & RP_QUIC_LONG_HEADER) {
		version = (__u32)b[1] << 24 | (__u32)b[2] << 16 | (__u32)b[3] << 8 | b[4];
		type = (b[0] >> 4) & 3;
		if (!((version == RP_QUIC_V1 && type == RP_QUIC_HANDSHAKE_V1) ||
		      (version == RP_QUIC_V2 && type == RP_QUIC_HANDSHAKE_V2)))
			return -1;
		if (b[RP_QUIC_LONG_DCID - 1] < 1 + len)
			return -1;
		if (rp_quic_sid(b + RP_QUIC_LONG_DCID, len, &sid))
			return -1;
	} else if (rp_quic_sid(b + RP_QUIC_SHORT_DCID, len, &sid)) {
		return -1;
	}
	if (rp_quic_member(g, sid, &idx) == 0 &&
	    bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0) {
		if (ctl->flags & RP_CTL_FLOWS)
			rp_flow_keep(md, ctl, g, fp, idx);
		return rp_took(fp, idx, RP_QUIC_ROUTED);
	}
	/* No member has this id, or its socket closed. */
	gs = rp_group_stats();
	if (gs)
		gs->quic_unknown_server_id++;
	return -1;
}

/* Pinned modes: select the member of this CPU or queue.  Returns 0 when
 * it took the connection; otherwise the weighted table decides, and the
 * group counter names why. */
static __always_inline int rp_select_pinned(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_flow_pick *fp)
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
		return rp_took(fp, idx, RP_PINNED);
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

/* serve renews the throttle's lease at every sample: an expired one means
 * no serve looks at the queues any more, so the plain weights decide. */
static __always_inline int rp_lease_over(struct rp_throttle *t)
{
	return bpf_ktime_get_ns() > t->lease_ns;
}

/* Re-hash into the weighted table, proportional to the weights: select
 * the member of the first re-hashed slot whose socket lives and that `t`
 * (when given) does not throttle.  Serves both a gone slot member
 * (rp_fallback) and a throttled one (rp_avoid_throttled).
 * Unrolled, and each try's failure falls through to the next, so the
 * verifier walks straight-line code.  Returns 0 when it took it. */
static __always_inline int rp_rehash_select(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_throttle *t,
					    enum rp_outcome outcome, struct rp_flow_pick *fp)
{
	__u32 idx, i;

#pragma unroll
	for (i = 0; i < RP_REHASH_TRIES; i++) {
		idx = g->slots[rp_rehash_slot(md->hash, i)];
		if (t && rp_throttled(t, idx))
			continue;
		if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0)
			return rp_took(fp, idx, outcome);
	}
	return -1;
}

/* Adaptive groups, step 3: when the slot's member `first` is throttled
 * and the lease runs, select an unthrottled member of the re-hashed table
 * (as rp_fallback does for a gone one).  Returns 0 when it took the
 * connection; otherwise the slot's member is tried as in a plain group. */
static __always_inline int rp_avoid_throttled(struct sk_reuseport_md *md, struct rp_gen *g, __u32 first,
					      struct rp_flow_pick *fp)
{
	struct rp_group_stats *gs;
	struct rp_throttle *t;
	__u32 zero = 0;

	t = bpf_map_lookup_elem(RP_MAP(RP_FD_THROTTLE), &zero);
	if (!t || !rp_throttled(t, first) || rp_lease_over(t))
		return -1;
	gs = rp_group_stats();
	if (gs)
		gs->throttle_skips++;
	return rp_rehash_select(md, g, t, RP_FALLBACK, fp);
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

/* The throttle a new connection of an adaptive group must respect when
 * its slot's socket is gone: the re-hash skips throttled members too.
 * NULL in a plain group, for a migrating request (not new work), and once
 * the lease is over. */
static __always_inline struct rp_throttle *rp_throttle_in_force(struct sk_reuseport_md *md)
{
	struct rp_throttle *t;
	struct rp_ctl *ctl;
	__u32 zero = 0;

	ctl = bpf_map_lookup_elem(RP_MAP(RP_FD_CTL), &zero);
	if (!ctl || !(ctl->flags & RP_CTL_ADAPTIVE) || rp_migrating(md))
		return NULL;
	t = bpf_map_lookup_elem(RP_MAP(RP_FD_THROTTLE), &zero);
	if (!t || rp_lease_over(t))
		return NULL;
	return t;
}

/* Steps 4 to 6: the slot's socket is gone, or no member is live.  It reads
 * n_live, md's fields and ctl again rather than take them from rp_select:
 * a value kept across its helper calls would have clang spill registers on
 * rp_select's common path too (a call may change md and g, so these are
 * loads after the first select, never copies). */
static __always_inline int rp_fallback(struct sk_reuseport_md *md, struct rp_gen *g, struct rp_flow_pick *fp)
{
	struct rp_group_stats *gs;
	__u32 n = g->n_live, idx, start, i, j;

	if (n) {
		/* Slot's socket closed (or being migrated away from). */
		gs = rp_group_stats();
		if (gs)
			gs->slot_misses++;
		if (rp_rehash_select(md, g, rp_throttle_in_force(md), rp_migrating(md) ? RP_MIGRATED : RP_FALLBACK,
				     fp) == 0)
			return 0;
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
			if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0)
				return rp_took(fp, idx, rp_migrating(md) ? RP_MIGRATED : RP_FALLBACK);
		}
	}

	/* No live member: the kernel's own selection takes over. */
	gs = rp_group_stats();
	if (gs)
		gs->no_live_member++;
	return -1;
}

/* The member of this connection's slot in the live weighted table. */
static __always_inline __u32 rp_slot(struct sk_reuseport_md *md, struct rp_gen *g)
{
	return g->slots[md->hash & RP_SLOT_MASK];
}

/* The common cases, ahead of the steps in a few straight lines of code:
 * a plain weighted group's new connection or datagram whose slot member
 * lives, and a known flow of a flow group without QUIC.  Returns 0 when
 * it took the packet (counted).  The code of every other step lies beyond
 * these lines: run in the steps' order, this path jumped over them, and
 * the instruction-cache lines it met cost about 80 ns a TCP connection
 * (docs/decisions/0010).  Returns -1 otherwise, and then fp holds what
 * the flow table knew of a flow group's datagram (step 0 done), or
 * nothing. */
static __always_inline int rp_short_cut(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
					struct rp_flow_pick *fp)
{
	__u32 idx;

	if (!(ctl->flags & (RP_CTL_QUIC | RP_CTL_FLOWS | RP_CTL_ADAPTIVE)) && g->mode == RP_MODE_WEIGHTED &&
	    !rp_migrating(md) && g->n_live) {
		idx = rp_slot(md, g);
		if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0))
			return -1;
		rp_count(idx, RP_SELECTED);
		return 0;
	}
	/* A miss leaves in fp what the table knew, for the steps to remember
	 * the flow's placement without a second lookup. */
	if (!(ctl->flags & RP_CTL_QUIC) && ctl->flags & RP_CTL_FLOWS && rp_flow_follow(md, ctl, g, fp) == 0) {
		rp_count(fp->idx, RP_FLOW);
		return 0;
	}
	return -1;
}

/* Steps Q to 5: returns 0 when a step selected a socket (fp->idx and
 * fp->outcome say which and how), -1 when none did (step 6). */
static __always_inline int rp_choose(struct sk_reuseport_md *md, struct rp_ctl *ctl, struct rp_gen *g,
				     struct rp_flow_pick *fp)
{
	/* A closing listener hands over a queued or half-open request. */
	int migrating = rp_migrating(md);
	__u32 idx;

	/* QUIC groups: a server-chosen connection id names its member. */
	if (ctl->flags & RP_CTL_QUIC && rp_select_quic(md, ctl, g, fp) == 0)
		return 0;

	/* Step 0 of QUIC groups (after step Q).  Other flow groups looked
	 * their flow up in rp_short_cut, and a miss left in fp what the table
	 * knew, for rp_count_member to remember.  Migrating requests are
	 * TCP's: never here. */
	if (ctl->flags & RP_CTL_QUIC && ctl->flags & RP_CTL_FLOWS && rp_flow_follow(md, ctl, g, fp) == 0)
		return 0;

	/* The weighted path's only cost of the pinned modes: this test of a
	 * field of the generation it has looked up anyway. */
	if (g->mode != RP_MODE_WEIGHTED && !migrating && rp_select_pinned(md, g, fp) == 0)
		return 0;

	/* Weighted table of the live generation: one byte in the element
	 * already looked up, so no further lookup and a warm cache line. */
	if (g->n_live) {
		idx = rp_slot(md, g);
		/* A plain group's only cost of adaptive steering: this test of
		 * a field of the ctl element it has looked up anyway.  A
		 * migrating request is not new work: it goes where it must.
		 * In a UDP group the QUIC and flow steps came first: a known
		 * flow went to its member throttled or not, so only a new flow
		 * gets here and skips a throttled member (decision 13). */
		if (ctl->flags & RP_CTL_ADAPTIVE && !migrating && rp_avoid_throttled(md, g, idx, fp) == 0)
			return 0;
		if (bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), &idx, 0) == 0)
			return rp_took(fp, idx, migrating ? RP_MIGRATED : RP_SELECTED);
	}
	return rp_fallback(md, g, fp);
}

int rp_select(struct sk_reuseport_md *md)
{
	/* Every field defined before any step: clang carries the struct
	 * into the one exit below, and the verifier refuses a read of a
	 * field some path left unset. */
	struct rp_flow_pick fp = {.state = RP_FLOW_NONE};
	struct rp_ctl *ctl;
	struct rp_gen *g;
	__u32 zero = 0, gen;

	/* Element 0 of an array always exists: these checks only satisfy
	 * the verifier.  SK_PASS without a choice lets the kernel select. */
	ctl = bpf_map_lookup_elem(RP_MAP(RP_FD_CTL), &zero);
	if (!ctl)
		return SK_PASS;
	gen = ctl->gen & 1;
	g = bpf_map_lookup_elem(RP_MAP(RP_FD_GENS), &gen);
	if (!g)
		return SK_PASS;
	if (rp_short_cut(md, ctl, g, &fp) == 0)
		return SK_PASS;
	if (rp_choose(md, ctl, g, &fp) == 0)
		rp_count_member(g, &fp);
	return SK_PASS;
}
