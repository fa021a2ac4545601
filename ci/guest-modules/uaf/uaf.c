// SPDX-License-Identifier: GPL-2.0
/*
 * uaf: reads one byte of a freed allocation on load and loads fine. Under a
 * KASAN kernel (--guest-kernel debug) that is a KASAN report, which fails
 * the run (exit 3); elsewhere nothing shows.
 */
#include <linux/compiler.h>
#include <linux/module.h>
#include <linux/slab.h>

static int __init uaf_init(void)
{
	char *p = kmalloc(64, GFP_KERNEL);
	char c;

	if (!p)
		return -ENOMEM;
	kfree(p);
	/* Keep the compiler from dropping the read of freed memory. */
	OPTIMIZER_HIDE_VAR(p);
	c = READ_ONCE(p[8]);
	pr_info("uaf: read %d after free\n", c);
	return 0;
}

static void __exit uaf_exit(void)
{
}

module_init(uaf_init);
module_exit(uaf_exit);
MODULE_DESCRIPTION("One use-after-free on load (p2pnvme debug kernel test)");
MODULE_LICENSE("GPL");
