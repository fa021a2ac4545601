/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * p2pcopy: copy offload between block devices through PCI P2P memory.
 * The single definition of the ioctl ABI of /dev/p2pcopy.
 */
#ifndef _UAPI_P2PCOPY_H
#define _UAPI_P2PCOPY_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define P2PCOPY_MODE_P2P	0	/* through P2P memory, or fail */
#define P2PCOPY_MODE_BOUNCE	1	/* through system memory */
#define P2PCOPY_MODE_AUTO	2	/* P2P where possible, else bounce */

/* How a provider's memory is reached by a device (Linux P2PDMA map type). */
#define P2PCOPY_MAP_NONE		0	/* system memory (bounce) */
#define P2PCOPY_MAP_NOT_SUPPORTED	1
#define P2PCOPY_MAP_BUS_ADDR		2	/* through a PCIe switch */
#define P2PCOPY_MAP_THRU_HOST_BRIDGE	3

/* Why auto mode fell back to bounce (p2pcopy_req.fallback). */
#define P2PCOPY_FALLBACK_NONE		0
#define P2PCOPY_FALLBACK_NO_P2PDMA	1	/* a queue lacks P2PDMA support */
#define P2PCOPY_FALLBACK_DISTANCE	2	/* no provider reachable by both */
#define P2PCOPY_FALLBACK_NO_MEMORY	3	/* providers lack free memory */

#define P2PCOPY_PROVIDER_LEN	32

struct p2pcopy_req {
	/* in */
	__u32 src_dev;		/* block device numbers (new_encode_dev) */
	__u32 dst_dev;
	__u64 src_off;		/* bytes; multiples of the logical block size */
	__u64 dst_off;
	__u64 len;
	__u32 mode;		/* P2PCOPY_MODE_* */
	__u32 chunk;		/* bytes per buffer; 0 = 256 KiB */
	__u32 depth;		/* buffers in flight; 0 = 4 */
	__u32 reserved;
	char provider[P2PCOPY_PROVIDER_LEN]; /* PCI address; "" = pick one */
	/* out (also filled on failure) */
	__u64 bytes_done;
	__u64 elapsed_ns;
	__u32 used_mode;	/* P2PCOPY_MODE_P2P or _BOUNCE */
	__u32 map_src;		/* P2PCOPY_MAP_* provider -> source device */
	__u32 map_dst;		/* P2PCOPY_MAP_* provider -> destination */
	__u32 fallback;		/* P2PCOPY_FALLBACK_* */
	char used_provider[P2PCOPY_PROVIDER_LEN];
};

/* Distance and map type from a P2P memory provider to a block device. */
struct p2pcopy_route {
	char provider[P2PCOPY_PROVIDER_LEN];	/* in */
	__u32 dev;				/* in */
	__s32 distance;				/* out: < 0 when unreachable */
	__u32 map;				/* out: P2PCOPY_MAP_* */
	__u32 queue_p2pdma;			/* out: queue accepts P2P pages */
};

struct p2pcopy_stats {
	__u64 copies;
	__u64 p2p_copies;
	__u64 bounce_copies;
	__u64 failed;
	__u64 p2p_bytes;
	__u64 bounce_bytes;
	__u64 fallbacks;
};

#define P2PCOPY_IOC_MAGIC	0xb7
#define P2PCOPY_IOC_COPY	_IOWR(P2PCOPY_IOC_MAGIC, 1, struct p2pcopy_req)
#define P2PCOPY_IOC_ROUTE	_IOWR(P2PCOPY_IOC_MAGIC, 2, struct p2pcopy_route)
#define P2PCOPY_IOC_STATS	_IOR(P2PCOPY_IOC_MAGIC, 3, struct p2pcopy_stats)

#endif /* _UAPI_P2PCOPY_H */
