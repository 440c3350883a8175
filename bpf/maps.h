/* SPDX-License-Identifier: GPL-2.0 */
/*
 * maps.h: how the program reaches its group's maps, and the two things
 * every step does with them: count, and select a member's socket.
 *
 * bcc 0.26 cannot declare a REUSEPORT_SOCKARRAY, so the controller creates
 * every map itself and passes their fds as RP_FD_* macros; the program
 * names them through bpf_pseudo_fd(), which bcc emits as a map-fd load.
 */
#ifndef RPCTL_MAPS_H
#define RPCTL_MAPS_H

#include "rpctl.h"

#ifndef RP_FD_SOCKS
#error "compile through rpctl's loader: it passes the map fds as -DRP_FD_*"
#endif

#define RP_MAP(fd) ((void *)bpf_pseudo_fd(1, (fd)))

/* steer.bpf.c builds three ways (docs/decisions/0017): a group's program
 * (no macro: its short cut, then a tail call to the shared program), the
 * program every group shares (RP_SHARED) and, for comparison, a group's
 * program with every step (RP_OWN).  The last two run steps 1 to 7. */
#if defined(RP_SHARED) || defined(RP_OWN)
#define RP_ALL_STEPS 1
#endif

/* The maps every selection reads, found once a run: ctl, the live
 * generation's array, the socket array and the member counters.  The other
 * maps (group counters, throttle, flows) are looked up where a step needs
 * them (RP_GROUP_MAP). */
struct rp_run_maps {
	void *ctl;
	void *gens;
	void *socks;
	void *member_stats;
};

#ifndef RP_OWN
/* This CPU's handoff (bpf/handoff.h): a group's program writes it, the
 * shared program reads it.  A program built with RP_OWN runs every step
 * itself, as every group's did before the shared program: for comparison. */
static __always_inline struct rp_handoff *rp_handoff(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(RP_MAP(RP_FD_HANDOFF), &zero);
}
#endif

#ifdef RP_SHARED
/* The shared program serves every group (docs/decisions/0017): the group's
 * program wrote its slot into this CPU's handoff before its tail call, and
 * each RP_FD_<NAME> names an array of the groups' maps <NAME>, indexed by
 * slot.  NULL while the slot holds no map (a group being made or
 * unloaded). */
static __always_inline __u32 *rp_run_slot(void)
{
	struct rp_handoff *h = rp_handoff();

	return h ? &h->slot : NULL;
}

static __always_inline void *rp_group_map(void *of_groups)
{
	__u32 *slot = rp_run_slot();

	return slot ? bpf_map_lookup_elem(of_groups, slot) : NULL;
}
#define RP_GROUP_MAP(fd) rp_group_map(RP_MAP(fd))

/* Whether every map of `m` was found. */
static __always_inline int rp_find_run_maps(struct rp_run_maps *m)
{
	__u32 *slot = rp_run_slot();

	if (!slot)
		return 0;
	m->ctl = bpf_map_lookup_elem(RP_MAP(RP_FD_CTL), slot);
	m->gens = bpf_map_lookup_elem(RP_MAP(RP_FD_GENS), slot);
	m->socks = bpf_map_lookup_elem(RP_MAP(RP_FD_SOCKS), slot);
	m->member_stats = bpf_map_lookup_elem(RP_MAP(RP_FD_MEMBER_STATS), slot);
	return m->ctl && m->gens && m->socks && m->member_stats;
}
#else
/* A group's program: its maps are constants of its code. */
#define RP_GROUP_MAP(fd) RP_MAP(fd)

static __always_inline int rp_find_run_maps(struct rp_run_maps *m)
{
	m->ctl = RP_MAP(RP_FD_CTL);
	m->gens = RP_MAP(RP_FD_GENS);
	m->socks = RP_MAP(RP_FD_SOCKS);
	m->member_stats = RP_MAP(RP_FD_MEMBER_STATS);
	return 1;
}
#endif

/* Element *key of a group map; NULL when it has none, or the map is not there. */
static __always_inline void *rp_lookup(void *map, void *key)
{
	return map ? bpf_map_lookup_elem(map, key) : NULL;
}

static __always_inline struct rp_group_stats *rp_group_stats(void)
{
	__u32 zero = 0;

	return rp_lookup(RP_GROUP_MAP(RP_FD_GROUP_STATS), &zero);
}

/* Add one to the group counter `field` (a field of struct rp_group_stats).
 * Per-CPU values: no other writer on this CPU, no atomics needed. */
#define rp_count_group(field)                                        \
	do {                                                         \
		struct rp_group_stats *rp_gs_ = rp_group_stats();    \
		if (rp_gs_)                                          \
			rp_gs_->field++;                             \
	} while (0)

/* Whether the socket of member *idx (in socket array `socks`, of the run's
 * maps) took the packet.  It fails for a socket that closed (the kernel
 * emptied its entry) and for an index the array does not have.  By
 * pointer, as the call takes it: the caller reads *idx again after the
 * call rather than keep a copy in a register across it
 * (docs/decisions/0010). */
static __always_inline int rp_select_member(struct sk_reuseport_md *md, void *socks, __u32 *idx)
{
	return bpf_sk_select_reuseport(md, socks, idx, 0) == 0;
}

#endif /* RPCTL_MAPS_H */
