/* SPDX-License-Identifier: GPL-2.0 */
/*
 * quic.h: the QUIC-LB server id of a UDP datagram (RFC 9000, 17.2; RFC
 * 9369 for version 2), and the member it names in the generation's sorted
 * id table (docs/decisions/0011).
 *
 * Bytes of the UDP payload read: a long header's first byte, version and
 * DCID length, then the connection id's first octet and at most
 * RP_QUIC_MAX_SID_LEN server id bytes.  Every QUIC packet that carries a
 * server-chosen id is longer (a short header adds a packet number and a
 * 16-byte AEAD tag).
 */
#ifndef RPCTL_QUIC_H
#define RPCTL_QUIC_H

#include "rpctl.h"

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

/* Whether a connection id's config rotation bits let it be routed; then
 * *sid is the server id after its first octet (len bytes, big endian). */
static __always_inline int rp_quic_sid(const __u8 *cid, __u32 len, __u32 *sid)
{
	__u32 v = 0, i;

	if (cid[0] >> 5 == RP_QUIC_UNROUTABLE)
		return 0;
#pragma unroll
	for (i = 0; i < RP_QUIC_MAX_SID_LEN; i++)
		if (i < len)
			v = v << 8 | cid[1 + i];
	*sid = v;
	return 1;
}

/* Whether the datagram carries a connection id the server chose (a
 * Handshake or short-header packet) that can be routed; then *sid is its
 * server id, len bytes.  Initial and 0-RTT packets carry an id the client
 * made up, and other versions are unknown: not one. */
static __always_inline int rp_quic_server_id(struct sk_reuseport_md *md, __u32 len, __u32 *sid)
{
	const __u8 *data = md->data, *end = md->data_end;
	__u8 b[RP_QUIC_PEEK];
	__u32 version, type, i;

	/* In place when the skb's linear part holds the bytes (a helper call
	 * less on every datagram); else through the helper, which also reads
	 * paged data.  Too short for a server-chosen id: not one. */
	if (data + RP_UDP_HEADER + RP_QUIC_PEEK <= end) {
#pragma unroll
		for (i = 0; i < RP_QUIC_PEEK; i++)
			b[i] = data[RP_UDP_HEADER + i];
	} else if (bpf_skb_load_bytes(md, RP_UDP_HEADER, b, RP_QUIC_PEEK)) {
		return 0;
	}
	if (!(b[0] & RP_QUIC_LONG_HEADER))
		return rp_quic_sid(b + RP_QUIC_SHORT_DCID, len, sid);
	version = (__u32)b[1] << 24 | (__u32)b[2] << 16 | (__u32)b[3] << 8 | b[4];
	type = (b[0] >> 4) & 3;
	if (!((version == RP_QUIC_V1 && type == RP_QUIC_HANDSHAKE_V1) ||
	      (version == RP_QUIC_V2 && type == RP_QUIC_HANDSHAKE_V2)))
		return 0;
	return b[RP_QUIC_LONG_DCID - 1] >= 1 + len && rp_quic_sid(b + RP_QUIC_LONG_DCID, len, sid);
}

/* Whether server id sid names a member of the generation; then *idx is
 * it.  A lower bound over the sorted quic_ids in a fixed 8 halvings
 * (RP_MAX_MEMBERS entries), then one compare. */
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
		return 0;
	*idx = (__u32)e;
	return 1;
}

#endif /* RPCTL_QUIC_H */
