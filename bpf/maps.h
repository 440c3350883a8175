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

static __always_inline struct rp_group_stats *rp_group_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(RP_MAP(RP_FD_GROUP_STATS), &zero);
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
	return bpf_sk_select_reuseport(md, RP_MAP(RP_FD_SOCKS), idx, 0) == 0;
}

#endif /* RPCTL_MAPS_H */
