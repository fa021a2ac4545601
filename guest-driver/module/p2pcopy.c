// SPDX-License-Identifier: GPL-2.0
/*
 * p2pcopy: copy offload between block devices through PCI P2P memory.
 *
 * In p2p mode the data moves device to device: the source device DMAs into
 * P2P memory (e.g. an NVMe CMB) and the destination device DMAs out of it,
 * so it never passes through system memory. Bounce mode does the same with
 * ordinary pages and is the baseline.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pci-p2pdma.h>
#include <linux/pci.h>
#include <linux/refcount.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "p2pcopy.h"

#define P2PCOPY_DEFAULT_CHUNK	(256 * 1024)
#define P2PCOPY_DEFAULT_DEPTH	4
#define P2PCOPY_MAX_CHUNK	(BIO_MAX_VECS * PAGE_SIZE)
#define P2PCOPY_MAX_DEPTH	64

static struct {
	atomic64_t copies, p2p_copies, bounce_copies, failed;
	atomic64_t p2p_bytes, bounce_bytes, fallbacks;
	atomic64_t stale_completions;	/* bios that found their copy gone */
} stats;

#define P2PCOPY_INFLIGHT_LIVE	0x7032706c	/* "p2pl" */
#define P2PCOPY_INFLIGHT_DEAD	0x6b6b6b6b

/*
 * The completion state of one copy's bios, on the heap: the waiter and
 * every bio in flight hold a reference, so p2pcopy_end_io() may still wake
 * the waiter and record an error after the waiter saw the last completion
 * and returned (the submitter's stack frame is gone by then). The magic
 * catches a completion that outlived it anyway (counted, and a WARN).
 */
struct p2pcopy_inflight {
	u32 magic;
	refcount_t ref;
	atomic_t pending;
	wait_queue_head_t wait;
	int error;		/* first failed bio's errno */
	struct block_device *failed;	/* and its device and direction */
	bool failed_write;
};

struct p2pcopy_buf {
	void *p2p;		/* P2P memory, or NULL for bounce pages */
	struct page **pages;
};

struct p2pcopy_ctx {
	struct block_device *src, *dst;
	struct pci_dev *provider;
	struct p2pcopy_buf *bufs;
	unsigned int nbufs, chunk, nr_pages;
	struct p2pcopy_inflight *in;
};

static struct pci_dev *bdev_pci_dev(struct block_device *bdev)
{
	struct device *d;

	for (d = disk_to_dev(bdev->bd_disk); d; d = d->parent)
		if (dev_is_pci(d))
			return to_pci_dev(d);
	return NULL;
}

/*
 * Linux's P2PDMA map type, which the kernel does not export: devices that
 * meet below a switch talk with bus addresses; otherwise the transfer goes
 * through the host bridge (allowed only where the distance check passed).
 */
static u32 p2pcopy_map(struct pci_dev *provider, struct pci_dev *client)
{
	struct pci_dev *a, *b;

	if (provider == client)
		return P2PCOPY_MAP_BUS_ADDR;
	for (a = pci_upstream_bridge(provider); a; a = pci_upstream_bridge(a))
		for (b = pci_upstream_bridge(client); b; b = pci_upstream_bridge(b))
			if (a == b)
				return pci_pcie_type(a) == PCI_EXP_TYPE_ROOT_PORT ?
					P2PCOPY_MAP_THRU_HOST_BRIDGE :
					P2PCOPY_MAP_BUS_ADDR;
	return P2PCOPY_MAP_THRU_HOST_BRIDGE;
}

static struct pci_dev *p2pcopy_parse_bdf(const char *s)
{
	unsigned int dom, bus, dev, fn;
	char buf[P2PCOPY_PROVIDER_LEN];

	strscpy(buf, s, sizeof(buf));
	if (sscanf(buf, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4)
		return NULL;
	return pci_get_domain_bus_and_slot(dom, bus, PCI_DEVFN(dev, fn));
}

static struct p2pcopy_inflight *p2pcopy_inflight_new(void)
{
	struct p2pcopy_inflight *in = kzalloc(sizeof(*in), GFP_KERNEL);

	if (!in)
		return NULL;
	in->magic = P2PCOPY_INFLIGHT_LIVE;
	refcount_set(&in->ref, 1);
	atomic_set(&in->pending, 0);
	init_waitqueue_head(&in->wait);
	return in;
}

static void p2pcopy_inflight_put(struct p2pcopy_inflight *in)
{
	if (refcount_dec_and_test(&in->ref)) {
		WRITE_ONCE(in->magic, P2PCOPY_INFLIGHT_DEAD);
		kfree(in);
	}
}

static void p2pcopy_end_io(struct bio *bio)
{
	struct p2pcopy_inflight *in = bio->bi_private;

	if (WARN_ON_ONCE(READ_ONCE(in->magic) != P2PCOPY_INFLIGHT_LIVE)) {
		atomic64_inc(&stats.stale_completions);
		bio_put(bio);
		return;
	}
	if (bio->bi_status &&
	    !cmpxchg(&in->error, 0, blk_status_to_errno(bio->bi_status))) {
		in->failed = bio->bi_bdev;
		in->failed_write = op_is_write(bio_op(bio));
	}
	bio_put(bio);
	if (atomic_dec_and_test(&in->pending))
		wake_up(&in->wait);
	/* The bio's reference: the waiter may have returned already. */
	p2pcopy_inflight_put(in);
}

static struct page *buf_page(struct p2pcopy_buf *b, unsigned int i)
{
	return b->p2p ? virt_to_page(b->p2p + i * PAGE_SIZE) : b->pages[i];
}

/* One bio per buffer; P2P pages never share a bio with host pages. */
static int p2pcopy_submit(struct p2pcopy_ctx *ctx, struct block_device *bdev,
			  blk_opf_t op, u64 off, struct p2pcopy_buf *b, u32 len)
{
	unsigned int i, nr = DIV_ROUND_UP(len, PAGE_SIZE);
	struct bio *bio;

	bio = bio_alloc(bdev, nr, op | REQ_NOMERGE, GFP_KERNEL);
	if (!bio)
		return -ENOMEM;
	bio->bi_iter.bi_sector = off >> SECTOR_SHIFT;
	for (i = 0; i < nr; i++) {
		u32 n = min_t(u32, len - i * PAGE_SIZE, PAGE_SIZE);

		if (bio_add_page(bio, buf_page(b, i), n, 0) != n) {
			bio_put(bio);
			return -EIO;
		}
	}
	bio->bi_end_io = p2pcopy_end_io;
	bio->bi_private = ctx->in;
	refcount_inc(&ctx->in->ref);
	atomic_inc(&ctx->in->pending);
	submit_bio(bio);
	return 0;
}

/* Names the device whose bio failed, and the P2P memory it used. */
static void p2pcopy_log_failure(struct p2pcopy_ctx *ctx, u64 pos)
{
	if (ctx->bufs[0].p2p)
		pr_warn("%s of %pg failed with error %d after %llu bytes of the copy %pg -> %pg (P2P memory of %s)\n",
			ctx->in->failed_write ? "write" : "read", ctx->in->failed,
			ctx->in->error, pos, ctx->src, ctx->dst,
			pci_name(ctx->provider));
	else
		pr_warn("%s of %pg failed with error %d after %llu bytes of the copy %pg -> %pg (bounce buffers)\n",
			ctx->in->failed_write ? "write" : "read", ctx->in->failed,
			ctx->in->error, pos, ctx->src, ctx->dst);
}

/* Reads a wave of chunks into the buffers, then writes them all out. */
static int p2pcopy_run(struct p2pcopy_ctx *ctx, struct p2pcopy_req *req)
{
	u64 pos = 0;
	int ret = 0;

	while (pos < req->len) {
		unsigned int i, n = 0;
		u64 lens[P2PCOPY_MAX_DEPTH];
		int pass;

		if (signal_pending(current)) {
			pr_info("copy interrupted by a signal after %llu bytes\n", pos);
			return -EINTR;
		}
		for (i = 0; i < ctx->nbufs && pos + (u64)i * ctx->chunk < req->len; i++)
			lens[n++] = min_t(u64, ctx->chunk, req->len - pos - (u64)i * ctx->chunk);
		for (pass = 0; pass < 2; pass++) {
			for (i = 0; i < n && !ret; i++) {
				u64 o = pos + (u64)i * ctx->chunk;

				ret = pass == 0 ?
					p2pcopy_submit(ctx, ctx->src, REQ_OP_READ,
						       req->src_off + o, &ctx->bufs[i], lens[i]) :
					p2pcopy_submit(ctx, ctx->dst, REQ_OP_WRITE,
						       req->dst_off + o, &ctx->bufs[i], lens[i]);
			}
			/* Buffers may be reused or freed only when idle. */
			wait_event(ctx->in->wait, atomic_read(&ctx->in->pending) == 0);
			if (!ret && ctx->in->error) {
				p2pcopy_log_failure(ctx, pos);
				/* Any device error is EIO (the ioctl's ABI). */
				return -EIO;
			}
			if (ret) {
				pr_warn("I/O error %d at byte %llu (%pg -> %pg)\n",
					ret, pos, ctx->src, ctx->dst);
				return ret;
			}
		}
		for (i = 0; i < n; i++)
			pos += lens[i];
		req->bytes_done = pos;
	}
	return 0;
}

static void p2pcopy_free_bufs(struct p2pcopy_ctx *ctx)
{
	unsigned int i, j;

	for (i = 0; i < ctx->nbufs; i++) {
		struct p2pcopy_buf *b = &ctx->bufs[i];

		if (b->p2p)
			pci_free_p2pmem(ctx->provider, b->p2p, ctx->chunk);
		if (b->pages) {
			for (j = 0; j < ctx->nr_pages; j++)
				if (b->pages[j])
					__free_page(b->pages[j]);
			kfree(b->pages);
		}
	}
	kfree(ctx->bufs);
	ctx->bufs = NULL;
}

static int p2pcopy_alloc_bufs(struct p2pcopy_ctx *ctx, bool p2p)
{
	unsigned int i, j;

	ctx->bufs = kcalloc(ctx->nbufs, sizeof(*ctx->bufs), GFP_KERNEL);
	if (!ctx->bufs)
		return -ENOMEM;
	for (i = 0; i < ctx->nbufs; i++) {
		struct p2pcopy_buf *b = &ctx->bufs[i];

		if (p2p) {
			b->p2p = pci_alloc_p2pmem(ctx->provider, ctx->chunk);
			if (!b->p2p)
				goto nospace;
			continue;
		}
		b->pages = kcalloc(ctx->nr_pages, sizeof(*b->pages), GFP_KERNEL);
		if (!b->pages)
			goto nomem;
		for (j = 0; j < ctx->nr_pages; j++) {
			b->pages[j] = alloc_page(GFP_KERNEL);
			if (!b->pages[j])
				goto nomem;
		}
	}
	return 0;
nospace:
	pr_info("provider %s has no %u x %u bytes of free P2P memory\n",
		pci_name(ctx->provider), ctx->nbufs, ctx->chunk);
	p2pcopy_free_bufs(ctx);
	return -ENOSPC;
nomem:
	p2pcopy_free_bufs(ctx);
	return -ENOMEM;
}

/*
 * Picks the P2P memory provider for p2p mode; on failure returns the errno
 * and why, so auto mode can fall back and say so.
 */
static int p2pcopy_pick(struct p2pcopy_ctx *ctx, struct p2pcopy_req *req,
			u32 *why)
{
	struct pci_dev *s = bdev_pci_dev(ctx->src), *d = bdev_pci_dev(ctx->dst);
	struct device *clients[2];

	if (!s || !d) {
		pr_info("%pg or %pg is not a PCI device\n", ctx->src, ctx->dst);
		*why = P2PCOPY_FALLBACK_NO_P2PDMA;
		return -EOPNOTSUPP;
	}
	if (!blk_queue_pci_p2pdma(bdev_get_queue(ctx->src)) ||
	    !blk_queue_pci_p2pdma(bdev_get_queue(ctx->dst))) {
		pr_info("%pg or %pg does not accept P2P memory (no P2PDMA queue)\n",
			ctx->src, ctx->dst);
		*why = P2PCOPY_FALLBACK_NO_P2PDMA;
		return -EOPNOTSUPP;
	}
	clients[0] = &s->dev;
	clients[1] = &d->dev;
	if (req->provider[0]) {
		ctx->provider = p2pcopy_parse_bdf(req->provider);
		if (!ctx->provider) {
			pr_info("no PCI device %.32s\n", req->provider);
			return -ENODEV;
		}
		if (pci_p2pdma_distance_many(ctx->provider, clients, 2, true) < 0) {
			pr_info("provider %s cannot reach %pg and %pg peer-to-peer\n",
				pci_name(ctx->provider), ctx->src, ctx->dst);
			pci_dev_put(ctx->provider);
			ctx->provider = NULL;
			*why = P2PCOPY_FALLBACK_DISTANCE;
			return -EXDEV;
		}
	} else {
		ctx->provider = pci_p2pmem_find_many(clients, 2);
		if (!ctx->provider) {
			pr_info("no P2P memory provider is reachable by both %pg (%s) and %pg (%s)\n",
				ctx->src, pci_name(s), ctx->dst, pci_name(d));
			*why = P2PCOPY_FALLBACK_DISTANCE;
			return -EXDEV;
		}
	}
	req->map_src = p2pcopy_map(ctx->provider, s);
	req->map_dst = p2pcopy_map(ctx->provider, d);
	strscpy(req->used_provider, pci_name(ctx->provider),
		sizeof(req->used_provider));
	return 0;
}

static int p2pcopy_check(struct p2pcopy_ctx *ctx, struct p2pcopy_req *req)
{
	u32 lbs = max(bdev_logical_block_size(ctx->src),
		      bdev_logical_block_size(ctx->dst));

	if (!req->len || req->src_off % lbs || req->dst_off % lbs || req->len % lbs) {
		pr_info("offsets and length must be non-zero multiples of %u bytes\n", lbs);
		return -EINVAL;
	}
	if (ctx->chunk % PAGE_SIZE || ctx->chunk > P2PCOPY_MAX_CHUNK ||
	    ctx->nbufs > P2PCOPY_MAX_DEPTH) {
		pr_info("chunk must be a multiple of %lu up to %lu, depth at most %u\n",
			PAGE_SIZE, P2PCOPY_MAX_CHUNK, P2PCOPY_MAX_DEPTH);
		return -EINVAL;
	}
	if (req->src_off + req->len > bdev_nr_bytes(ctx->src) ||
	    req->dst_off + req->len > bdev_nr_bytes(ctx->dst) ||
	    req->src_off + req->len < req->src_off ||
	    req->dst_off + req->len < req->dst_off) {
		pr_info("range of %llu bytes runs past the end of %pg or %pg\n",
			req->len, ctx->src, ctx->dst);
		return -ERANGE;
	}
	if (ctx->src == ctx->dst && req->src_off < req->dst_off + req->len &&
	    req->dst_off < req->src_off + req->len) {
		pr_info("source and destination ranges overlap on %pg\n", ctx->src);
		return -EBUSY;
	}
	return 0;
}

static int p2pcopy_copy(struct p2pcopy_req *req)
{
	struct p2pcopy_ctx ctx = { };
	struct file *sf, *df;
	u64 start = ktime_get_ns();
	bool p2p = req->mode != P2PCOPY_MODE_BOUNCE;
	u32 why = P2PCOPY_FALLBACK_NONE;
	int ret;

	req->bytes_done = 0;
	req->map_src = P2PCOPY_MAP_NONE;
	req->map_dst = P2PCOPY_MAP_NONE;
	req->used_provider[0] = 0;
	req->fallback = P2PCOPY_FALLBACK_NONE;
	if (req->mode > P2PCOPY_MODE_AUTO)
		return -EINVAL;
	sf = bdev_file_open_by_dev(new_decode_dev(req->src_dev), BLK_OPEN_READ, NULL, NULL);
	if (IS_ERR(sf))
		return PTR_ERR(sf);
	df = bdev_file_open_by_dev(new_decode_dev(req->dst_dev),
				   BLK_OPEN_READ | BLK_OPEN_WRITE, NULL, NULL);
	if (IS_ERR(df)) {
		fput(sf);
		return PTR_ERR(df);
	}
	ctx.src = file_bdev(sf);
	ctx.dst = file_bdev(df);
	ctx.chunk = req->chunk ? req->chunk : P2PCOPY_DEFAULT_CHUNK;
	ctx.nbufs = req->depth ? req->depth : P2PCOPY_DEFAULT_DEPTH;
	ctx.nr_pages = DIV_ROUND_UP(ctx.chunk, PAGE_SIZE);
	ctx.in = p2pcopy_inflight_new();
	if (!ctx.in) {
		ret = -ENOMEM;
		goto out;
	}

	ret = p2pcopy_check(&ctx, req);
	if (ret)
		goto out;
	if (p2p) {
		ret = p2pcopy_pick(&ctx, req, &why);
		if (!ret) {
			ret = p2pcopy_alloc_bufs(&ctx, true);
			if (ret == -ENOSPC)
				why = P2PCOPY_FALLBACK_NO_MEMORY;
		}
		if (ret && req->mode == P2PCOPY_MODE_AUTO && why) {
			pr_info("auto mode: falling back to bounce buffers (%d)\n", ret);
			atomic64_inc(&stats.fallbacks);
			req->fallback = why;
			req->map_src = P2PCOPY_MAP_NONE;
			req->map_dst = P2PCOPY_MAP_NONE;
			req->used_provider[0] = 0;
			p2p = false;
		} else if (ret) {
			goto out;
		}
	}
	if (!p2p) {
		ret = p2pcopy_alloc_bufs(&ctx, false);
		if (ret)
			goto out;
	}
	req->used_mode = p2p ? P2PCOPY_MODE_P2P : P2PCOPY_MODE_BOUNCE;
	ret = p2pcopy_run(&ctx, req);
	p2pcopy_free_bufs(&ctx);
	if (!ret) {
		atomic64_inc(p2p ? &stats.p2p_copies : &stats.bounce_copies);
		atomic64_add(req->len, p2p ? &stats.p2p_bytes : &stats.bounce_bytes);
	}
out:
	if (ctx.in)
		p2pcopy_inflight_put(ctx.in);
	if (ctx.provider)
		pci_dev_put(ctx.provider);
	fput(df);
	fput(sf);
	req->elapsed_ns = ktime_get_ns() - start;
	atomic64_inc(&stats.copies);
	if (ret)
		atomic64_inc(&stats.failed);
	return ret;
}

static int p2pcopy_route(struct p2pcopy_route *r)
{
	struct pci_dev *provider, *client;
	struct device *dev;
	struct file *f;
	int ret = 0;

	provider = p2pcopy_parse_bdf(r->provider);
	if (!provider)
		return -ENODEV;
	f = bdev_file_open_by_dev(new_decode_dev(r->dev), BLK_OPEN_READ, NULL, NULL);
	if (IS_ERR(f)) {
		ret = PTR_ERR(f);
		goto put;
	}
	client = bdev_pci_dev(file_bdev(f));
	if (!client) {
		ret = -EOPNOTSUPP;
		goto close;
	}
	dev = &client->dev;
	r->queue_p2pdma = !!blk_queue_pci_p2pdma(bdev_get_queue(file_bdev(f)));
	r->distance = pci_p2pdma_distance_many(provider, &dev, 1, false);
	r->map = r->distance < 0 ? P2PCOPY_MAP_NOT_SUPPORTED :
		 p2pcopy_map(provider, client);
close:
	fput(f);
put:
	pci_dev_put(provider);
	return ret;
}

static long p2pcopy_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case P2PCOPY_IOC_COPY: {
		struct p2pcopy_req req;
		int ret;

		if (copy_from_user(&req, uarg, sizeof(req)))
			return -EFAULT;
		req.provider[P2PCOPY_PROVIDER_LEN - 1] = 0;
		ret = p2pcopy_copy(&req);
		/* Results go back on failure too: bytes done, elapsed time. */
		if (copy_to_user(uarg, &req, sizeof(req)))
			return -EFAULT;
		return ret;
	}
	case P2PCOPY_IOC_ROUTE: {
		struct p2pcopy_route r;
		int ret;

		if (copy_from_user(&r, uarg, sizeof(r)))
			return -EFAULT;
		r.provider[P2PCOPY_PROVIDER_LEN - 1] = 0;
		ret = p2pcopy_route(&r);
		if (!ret && copy_to_user(uarg, &r, sizeof(r)))
			return -EFAULT;
		return ret;
	}
	case P2PCOPY_IOC_STATS: {
		struct p2pcopy_stats s = {
			.copies = atomic64_read(&stats.copies),
			.p2p_copies = atomic64_read(&stats.p2p_copies),
			.bounce_copies = atomic64_read(&stats.bounce_copies),
			.failed = atomic64_read(&stats.failed),
			.p2p_bytes = atomic64_read(&stats.p2p_bytes),
			.bounce_bytes = atomic64_read(&stats.bounce_bytes),
			.fallbacks = atomic64_read(&stats.fallbacks),
		};

		return copy_to_user(uarg, &s, sizeof(s)) ? -EFAULT : 0;
	}
	}
	return -ENOTTY;
}

static ssize_t stats_show(struct device *dev, struct device_attribute *attr,
			  char *buf)
{
	return sysfs_emit(buf,
			  "copies %lld\np2p_copies %lld\nbounce_copies %lld\nfailed %lld\np2p_bytes %lld\nbounce_bytes %lld\nfallbacks %lld\nstale_completions %lld\n",
			  atomic64_read(&stats.copies),
			  atomic64_read(&stats.p2p_copies),
			  atomic64_read(&stats.bounce_copies),
			  atomic64_read(&stats.failed),
			  atomic64_read(&stats.p2p_bytes),
			  atomic64_read(&stats.bounce_bytes),
			  atomic64_read(&stats.fallbacks),
			  atomic64_read(&stats.stale_completions));
}
static DEVICE_ATTR_RO(stats);

static struct attribute *p2pcopy_attrs[] = {
	&dev_attr_stats.attr,
	NULL,
};
ATTRIBUTE_GROUPS(p2pcopy);

static const struct file_operations p2pcopy_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = p2pcopy_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice p2pcopy_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "p2pcopy",
	.fops = &p2pcopy_fops,
	.groups = p2pcopy_groups,
	.mode = 0600,
};
module_misc_device(p2pcopy_misc);

MODULE_DESCRIPTION("Copy offload between block devices through PCI P2P memory");
MODULE_LICENSE("GPL");
