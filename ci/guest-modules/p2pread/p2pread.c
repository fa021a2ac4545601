// SPDX-License-Identifier: GPL-2.0
/*
 * p2pread: a sample out-of-tree module for `p2pnvme module build`. On load
 * it allocates P2P memory from a provider reachable by the disk's NVMe
 * controller, reads LEN bytes at OFFSET of the disk into it with one bio per
 * page, prints a checksum of what landed, frees the memory and stays loaded
 * only if every read succeeded.
 *
 *   insmod p2pread.ko disk=/dev/nvme0n1 offset=1048576 len=65536
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/crc32.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/pci-p2pdma.h>

static char *disk = "/dev/nvme0n1";
module_param(disk, charp, 0444);
MODULE_PARM_DESC(disk, "block device to read");
static unsigned long offset = 1 << 20;
module_param(offset, ulong, 0444);
MODULE_PARM_DESC(offset, "byte offset, a multiple of 4096");
static unsigned long len = 4096;
module_param(len, ulong, 0444);
MODULE_PARM_DESC(len, "bytes to read, a multiple of 4096");

static struct pci_dev *disk_pci_dev(struct block_device *bdev)
{
	struct device *d;

	for (d = disk_to_dev(bdev->bd_disk); d; d = d->parent)
		if (dev_is_pci(d))
			return to_pci_dev(d);
	return NULL;
}

static int read_page(struct block_device *bdev, void *p2p, sector_t sector)
{
	struct bio *bio;
	int ret;

	bio = bio_alloc(bdev, 1, REQ_OP_READ | REQ_NOMERGE, GFP_KERNEL);
	bio->bi_iter.bi_sector = sector;
	if (bio_add_page(bio, virt_to_page(p2p), PAGE_SIZE, 0) != PAGE_SIZE) {
		bio_put(bio);
		return -EIO;
	}
	ret = submit_bio_wait(bio);
	bio_put(bio);
	return ret;
}

static int __init p2pread_init(void)
{
	struct pci_dev *client, *provider;
	struct file *f;
	unsigned long done;
	u32 crc = 0;
	void *p2p;
	int ret = 0;

	if (!len || len % PAGE_SIZE || offset % PAGE_SIZE)
		return -EINVAL;
	f = bdev_file_open_by_path(disk, BLK_OPEN_READ, NULL, NULL);
	if (IS_ERR(f))
		return PTR_ERR(f);
	client = disk_pci_dev(file_bdev(f));
	if (!client || !blk_queue_pci_p2pdma(bdev_get_queue(file_bdev(f)))) {
		pr_err("p2pread: %s cannot do P2P DMA\n", disk);
		ret = -EOPNOTSUPP;
		goto out_file;
	}
	provider = pci_p2pmem_find(&client->dev);
	if (!provider) {
		pr_err("p2pread: no P2P memory provider reachable by %s\n", disk);
		ret = -ENODEV;
		goto out_file;
	}
	p2p = pci_alloc_p2pmem(provider, PAGE_SIZE);
	if (!p2p) {
		ret = -ENOMEM;
		goto out_provider;
	}
	for (done = 0; done < len && !ret; done += PAGE_SIZE) {
		ret = read_page(file_bdev(f), p2p, (offset + done) >> SECTOR_SHIFT);
		if (!ret)
			crc = crc32_le(crc, p2p, PAGE_SIZE);
	}
	if (!ret)
		pr_info("p2pread: read %lu bytes of %s into P2P memory of %s, crc32 %08x\n",
			len, disk, pci_name(provider), crc);
	pci_free_p2pmem(provider, p2p, PAGE_SIZE);
out_provider:
	pci_dev_put(provider);
out_file:
	fput(f);
	return ret;
}

static void __exit p2pread_exit(void)
{
}

module_init(p2pread_init);
module_exit(p2pread_exit);
MODULE_DESCRIPTION("Read a disk into P2P memory (p2pnvme sample module)");
MODULE_LICENSE("GPL");
