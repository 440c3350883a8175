/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rpctl.h: every struct, enum and limit shared by the SK_REUSEPORT program
 * (steer.bpf.c) and the Python controller (controller/contract/abi.py mirrors it and
 * tests/unit/test_abi.py holds the two to the same sizes and offsets).
 *
 * Fixed-width types only; padding is written out so that both sides agree
 * without relying on a compiler's layout rules.
 */
#ifndef RPCTL_H
#define RPCTL_H

/* Bumped whenever a struct or a map below changes shape: a controller
 * refuses pinned state of another version instead of reading garbage. */
#define RP_ABI_VERSION 5

/* Capacity of a group: sockarray size, members map size, live list size. */
#define RP_MAX_MEMBERS 256

/* Slots of one weighted table.  A power of two so that the program maps a
 * hash to a slot with a mask instead of a division.  1,024 one-byte slots
 * (1 KiB, in the generation element the program has looked up anyway) put
 * every share within 0.1 point of its weight and cost a cache line that
 * stays warm; a 64 K-slot table of u32 (256 KiB) missed the caches on
 * nearly every connection (docs/decisions/0005). */
#define RP_SLOT_BITS 10
#define RP_SLOTS (1u << RP_SLOT_BITS)
#define RP_SLOT_MASK (RP_SLOTS - 1)

/* Two generations (elements 0 and 1 of the map "gens"): writers fill the
 * inactive one, then flip rp_ctl.gen. */
#define RP_GENERATIONS 2

/* A pin entry that names nobody. */
#define RP_NO_MEMBER 0xffffffffu

#define RP_NAME_LEN 32

/* Pinned modes.  One pin table per generation, indexed by CPU (CPU mode)
 * or by receive queue (RSS mode); a CPU or queue past its end is served by
 * the weighted table, like one with no member. */
#define RP_MAX_PINS 1024
/* Set in a pin entry whose member is draining, weightless or gone when the
 * generation was published: the program counts a pin fallback instead of
 * selecting it. */
#define RP_PIN_UNAVAILABLE 0x80000000u
/* Largest RSS indirection table rpctl takes (NICs have 64 to 2048). */
#define RP_RSS_MAX_INDIR 4096
/* Bytes the NIC's Toeplitz hash reads at most: IPv6 addresses and ports. */
#define RP_RSS_INPUT_MAX 36
#define RP_IFNAME_LEN 16

/* UDP flow affinity (map "flows"): a group's flow table holds
 * rp_ctl.flow_table_size flows (a power of two) in sets of RP_FLOW_WAYS,
 * two adjacent cache lines per set (decision 0010).  Default: 65,536
 * flows, 1 MiB, forgotten after 30 s of silence. */
#define RP_FLOW_WAYS 8
#define RP_FLOW_TABLE_DEFAULT 65536
#define RP_FLOW_IDLE_MS_DEFAULT 30000
/* rp_flow.incarnation of no member: rp_gen.incarnation[] of an index that
 * is not a member of the generation. */
#define RP_NO_INCARNATION 0
/* QUIC-LB server ids (plaintext): at most 4 bytes, so that an id and a
 * member index fit one u64 of the generation's sorted lookup table. */
#define RP_QUIC_MAX_SID_LEN 4
/* An unused entry of rp_gen.quic_ids: sorts after every real entry. */
#define RP_QUIC_NO_ID 0xffffffffffffffffULL

/* rp_member.flags */
enum rp_member_flag {
	RP_MEMBER_USED = 1u << 0,      /* the entry describes a member */
	RP_MEMBER_QUIC = 1u << 1,      /* quic_server_id is set */
	/* several processes serve its socket (a prefork server's children):
	 * pid is the first of them, readers find the others */
	RP_MEMBER_SHARED = 1u << 2,
	/* User space only: the operator's verdict on the member's server
	 * generation (server_gen), kept by every member of it
	 * (docs/decisions/0021).  The program never reads them. */
	RP_MEMBER_PROMOTED = 1u << 3,
	RP_MEMBER_ROLLED_BACK = 1u << 4,
	/* User space only: its generation is a canary (it takes a share of new
	 * work by its weights), as the last reconcile published it. */
	RP_MEMBER_CANARY = 1u << 5,
};

/* rp_policy.flags: per generation, so a drain flips with its table. */
enum rp_policy_flag {
	RP_POLICY_PRESENT = 1u << 0,   /* member of this generation */
	RP_POLICY_DRAINING = 1u << 1,  /* takes no new connection */
};

/* rp_ctl.flags */
enum rp_ctl_flag {
	/* Loaded as SELECT_OR_MIGRATE: the program places the requests of a
	 * closing listener.  Without it (kernels before 5.14) they are lost. */
	RP_CTL_MIGRATE = 1u << 0,
	/* UDP flow affinity: a datagram of a flow in the map "flows" goes to
	 * the member the flow was placed on while that member's socket lives. */
	RP_CTL_FLOWS = 1u << 1,
	/* A UDP group that routes QUIC packets by the server id of their
	 * connection id (quic_sid_len bytes after its first octet). */
	RP_CTL_QUIC = 1u << 2,
	/* Adaptive (rpctl serve): the program skips the members the map
	 * "throttle" names while its lease runs (docs/decisions/0013). */
	RP_CTL_ADAPTIVE = 1u << 3,
	/* The group runs on the program shared by every group of this boot:
	 * its own program is an entry that sets rp_ctl.slot and jumps there
	 * (docs/decisions/0017).  Without it the group has a program of its own. */
	RP_CTL_SHARED = 1u << 4,
	/* balance = "datagram": a UDP group without flow affinity or QUIC
	 * places each datagram by the weights at a random draw of its own
	 * (bpf_get_prandom_u32) instead of the kernel's hash of its 4-tuple,
	 * so one source's datagrams spread over the members. */
	RP_CTL_DATAGRAM = 1u << 5,
};

/* rp_ctl.proto */
enum rp_proto {
	RP_PROTO_TCP = 6,
	RP_PROTO_UDP = 17,
};

/* rp_gen.mode: how the program picks a member. */
enum rp_mode {
	RP_MODE_WEIGHTED = 0,  /* the slot table */
	RP_MODE_CPU = 1,       /* pin[CPU the program runs on] */
	RP_MODE_RSS = 2,       /* pin[rss_indir[NIC hash % rss_indir_size]] */
};

/* rp_gen.rss_flags: the fields the NIC hashes, per IP version.  A version
 * without its flag is not hashed the NIC's way: weighted table. */
enum rp_rss_flag {
	RP_RSS_IPV4 = 1u << 0,         /* IPv4 source and destination address */
	RP_RSS_IPV4_PORTS = 1u << 1,   /* ...and the source and destination port */
	RP_RSS_IPV6 = 1u << 2,
	RP_RSS_IPV6_PORTS = 1u << 3,
};

/* Map "ctl", one element: which generation is live, and what the group is. */
struct rp_ctl {
	__u32 abi_version;
	__u32 gen;             /* 0 or 1: the live table and live list */
	__u32 proto;           /* enum rp_proto */
	__u32 family;          /* AF_INET or AF_INET6 */
	__u8 addr[16];         /* bound address (IPv4 in the first 4 bytes) */
	__u16 port;            /* host byte order */
	__u16 slot;            /* RP_CTL_SHARED: the group's slot in the shared program's maps */
	__u32 flags;           /* enum rp_ctl_flag */
	__u64 created_ns;      /* CLOCK_REALTIME at creation */
	/* Creation options, fixed for the group's life. */
	__u32 flow_table_size; /* flows the map "flows" holds (sets x RP_FLOW_WAYS) */
	__u32 flow_idle_ms;    /* a flow unseen this long is placed as new */
	__u32 quic_sid_len;    /* RP_CTL_QUIC: server id bytes, 1..RP_QUIC_MAX_SID_LEN */
	__u32 flow_idle_ticks; /* flow_idle_ms in jiffies of this kernel (its HZ) */
};

_Static_assert(RP_MAX_MEMBERS <= 256, "rp_gen.slots holds member indexes in one byte");

/* Map "gens", two elements: everything the program reads to place a
 * connection in one generation.  slots[] is the weighted table: the member
 * index of each slot (every index of RP_MAX_MEMBERS fits a byte); it names
 * nobody, and the program does not read it, while n_live is 0.  live[]
 * lists the members that may take a connection (registered, not draining,
 * weight > 0) in index order; the program falls back to it when a slot's
 * socket is gone.
 *
 * The pin tables live here too, so that a pin change (or a drain in a
 * pinned mode) flips with ctl.gen like a weight change, and the program
 * reads the mode from the element it has already looked up. */
struct rp_gen {
	__u32 mode;            /* enum rp_mode */
	__u32 n_live;          /* used entries of live[] */
	__u64 published_ns;    /* CLOCK_REALTIME when this generation went live */
	__u8 slots[RP_SLOTS];  /* hash & RP_SLOT_MASK -> member index */
	__u32 live[RP_MAX_MEMBERS];
	/* Member index -> the incarnation of the socket it holds in this
	 * generation (rp_member.incarnation), RP_NO_INCARNATION when the index
	 * is no member.  A flow remembers the incarnation it was placed on, so
	 * an index freed and taken by a new socket does not inherit the old
	 * socket's flows. */
	__u32 incarnation[RP_MAX_MEMBERS];
	__u32 rss_flags;       /* enum rp_rss_flag */
	__u32 rss_indir_size;  /* used entries of rss_indir[] */
	char pin_dev[RP_IFNAME_LEN];  /* RSS mode: the device the tables are from */
	/* CPU or receive queue -> member index, | RP_PIN_UNAVAILABLE when it
	 * takes nothing now; RP_NO_MEMBER when nobody is pinned there. */
	__u32 pin[RP_MAX_PINS];
	__u16 rss_indir[RP_RSS_MAX_INDIR];  /* NIC hash % size -> receive queue */
	/* The device's Toeplitz hash as a table: the hash of input byte i
	 * having value v (every other byte 0) is rss_hash[i][v], and the hash
	 * of an input is the XOR over its bytes (the hash is linear).  Built
	 * by the controller from the device's key. */
	__u32 rss_hash[RP_RSS_INPUT_MAX][256];
	/* RP_CTL_QUIC: server id << 32 | member index of every member with a
	 * server id (draining ones too), sorted, padded with RP_QUIC_NO_ID, so
	 * the program finds an id in 8 halvings and a change of ids flips with
	 * the generation (docs/decisions/0011). */
	__u64 quic_ids[RP_MAX_MEMBERS];
};

/* One member's policy in one generation. */
struct rp_policy {
	__u32 weight;          /* configured weight, kept while draining */
	__u32 flags;           /* enum rp_policy_flag */
};

/* Map "members", RP_MAX_MEMBERS elements indexed like the socket array.
 * Only user space reads it: the program needs nothing but the tables. */
struct rp_member {
	char name[RP_NAME_LEN];
	__u64 cookie;          /* SO_COOKIE of the registered socket */
	__u32 pid;             /* process serving the socket */
	__u32 fd;              /* its fd number in that process */
	__u32 flags;           /* enum rp_member_flag */
	/* Bumped (never RP_NO_INCARNATION) whenever a new socket takes this
	 * index; published into rp_gen.incarnation[]. */
	__u32 incarnation;
	__u64 registered_ns;   /* CLOCK_REALTIME at registration */
	struct rp_policy policy[RP_GENERATIONS];
	/* selected + fallback counted when the live generation was published,
	 * so that an observed share can be told since the last change. */
	__u64 base_selections[RP_GENERATIONS];
	__u32 quic_server_id;  /* RP_MEMBER_QUIC: its QUIC-LB server id */
	/* User space only: the server generation its listener belongs to, 1, 2,
	 * ... per group in order of appearance; 0 when not known (a member
	 * registered by hand).  The program never reads it (decision 0021). */
	__u32 server_gen;
};

/* Map "member_stats", per CPU, indexed like the socket array. */
struct rp_member_stats {
	__u64 selected;        /* chosen through its slot in the table */
	__u64 fallback;        /* chosen because the slot's socket was gone, or
	                        * its member throttled (adaptive) */
	__u64 migrated;        /* took a request from a closing listener */
	__u64 pinned;          /* chosen as the member of its CPU or queue */
	__u64 flow_datagrams;  /* UDP: sent to it by its flow in the flow table */
	__u64 flows_created;   /* UDP: new flows (or idle ones) placed on it */
	__u64 flows_reassigned; /* UDP: flows placed on it because their member was gone */
	__u64 quic_routed;     /* QUIC packet sent to it by its server id */
};

/* Map "group_stats", per CPU, one element. */
struct rp_group_stats {
	__u64 slot_misses;     /* slot's socket gone: fell back to live[] */
	__u64 no_live_member;  /* no live member: the kernel chose */
	__u64 pin_fallbacks;   /* pinned member draining or gone: weighted table */
	__u64 pin_unassigned;  /* CPU or queue with no member: weighted table */
	__u64 rss_unhashed;    /* RSS mode, a packet the NIC's hash cannot be
	                        * recomputed for: weighted table */
	/* UDP: flows forgotten to make room for a new flow in a full set
	 * (every way live): each is placed again by the weights when it
	 * sends next, and may move. */
	__u64 flow_evictions;
	__u64 quic_unknown_server_id;  /* QUIC packet whose server id names no
	                                * live member: flows/weights chose */
	__u64 throttle_skips;  /* adaptive: slot's member throttled, re-hashed
	                        * to another member */
};

/* One remembered flow: a way of a set of the map "flows". */
struct rp_flow {
	__u32 tag;             /* md->hash | 1 of the flow; 0: an empty way */
	__u16 member;          /* index in the socket array */
	__u16 flags;           /* enum rp_flow_flag */
	__u32 incarnation;     /* rp_gen.incarnation[member] when placed */
	__u32 seen;            /* jiffies when last refreshed, 32 bits: ages
	                        * are differences taken as signed, good for
	                        * 24 days at HZ=1000 */
};

enum rp_flow_flag {
	/* The flow sent a datagram after the one that placed it: set once,
	 * by the program.  A full set gives a new flow's way to a flow seen
	 * once (a DNS query, a scan) before a flow seen again. */
	RP_FLOW_AGAIN = 1,
};

/* Map "flows" (ARRAY, flow_table_size / RP_FLOW_WAYS elements), UDP groups
 * with flow affinity: set md->hash & (sets - 1) holds the flows of that
 * hash.  Keyed by the kernel's hash of the 4-tuple: two flows of one hash
 * share a member (decision 0010). */
struct rp_flow_set {
	struct rp_flow way[RP_FLOW_WAYS];
};

/* Map "throttle", one element, adaptive groups: the members whose queue
 * built while others' did not, written by rpctl serve at every sample.
 * The program reads lease_ns and bits only; a lease that ran out (serve
 * stopped or was killed) throttles nobody: plain weights again. */
struct rp_throttle {
	__u64 lease_ns;        /* CLOCK_MONOTONIC (bpf_ktime_get_ns): bits hold until then */
	__u64 sampled_ns;      /* CLOCK_MONOTONIC of serve's last sample, for readers:
	                        * an adaptive group nobody samples (serve killed)
	                        * says so; the program does not read it */
	__u64 bits[RP_MAX_MEMBERS / 64];  /* member i throttled: bits[i / 64] >> (i % 64) & 1 */
	/* Why, for readers: the member's queue and the others' deepest when
	 * it was throttled. */
	__u32 queue[RP_MAX_MEMBERS];
	__u32 others[RP_MAX_MEMBERS];
};

/* Map "handoff" of the shared program (PERCPU_ARRAY, one element): a
 * group's program that did not take a selection on its short cut says
 * here, on its CPU, whose selection it hands to the shared program, the
 * draw it places by (datagram balance) and what the flow table knew of the
 * datagram's flow, then tail-calls it (bpf/handoff.h, docs/decisions/0017).
 * Nothing else runs on that CPU in between; user space only creates it. */
struct rp_handoff {
	__u32 slot;            /* the group's slot: its maps in the arrays of maps */
	__u32 flow_state;      /* enum rp_flow_state of the short cut's flow pick */
	__u32 hash;            /* RP_CTL_DATAGRAM: the run's random draw, which it places by */
	__u32 _pad1;
};

#endif /* RPCTL_H */
