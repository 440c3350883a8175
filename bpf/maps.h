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

#ifdef RP_SHARED
#ifndef RP_FD_SLOT
#error "the shared program names the per-CPU slot its group's stub wrote: -DRP_FD_SLOT"
#endif
/* The shared program serves every group: its group's stub program wrote
 * the group's slot into the per-CPU map "slot" before its tail call, and
 * each RP_FD_<NAME> names an array of the groups' maps <NAME>, indexed by
 * slot.  NULL when the slot holds no map (the group is being unloaded). */
static __always_inline void *rp_group_map(void *of_groups)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(RP_MAP(RP_FD_SLOT), &zero);

	return slot ? bpf_map_lookup_elem(of_groups, slot) : NULL;
}
#define RP_GROUP_MAP(fd) rp_group_map(RP_MAP(fd))
#else
/* A group's own program: its maps are constants of its code. */
#define RP_GROUP_MAP(fd) RP_MAP(fd)
#endif

/* Element *key of a group map; NULL when it has none, or the map is not there. */
static __always_inline void *rp_lookup(void *map, const void *key)
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

/* Whether the socket of member *idx took the packet.  It fails for a
 * socket that closed (the kernel emptied its entry) and for an index the
 * array does not have.  By pointer, as the call takes it: the caller
 * reads *idx again after the call rather than keep a copy in a register
 * across it (docs/decisions/0010). */
static __always_inline int rp_select_member(struct sk_reuseport_md *md, __u32 *idx)
{
	void *socks = RP_GROUP_MAP(RP_FD_SOCKS);

	return socks && bpf_sk_select_reuseport(md, socks, idx, 0) == 0;
}

#endif /* RPCTL_MAPS_H */
