// SPDX-License-Identifier: GPL-2.0
/*
 * oops: oopses on load (a NULL write in module init), so the insmod that
 * loads it is killed. Tests that `p2pnvme run` reports a kernel oops under
 * a failing command as exit 255 with the oops.
 */
#include <linux/compiler.h>
#include <linux/module.h>

static int __init oops_init(void)
{
	int *target = NULL;

	/* Keep the compiler from proving the store away. */
	OPTIMIZER_HIDE_VAR(target);
	pr_info("oops: writing through a NULL pointer\n");
	WRITE_ONCE(*target, 1);
	return 0;
}

module_init(oops_init);
MODULE_DESCRIPTION("Oops on load (p2pnvme exit status test)");
MODULE_LICENSE("GPL");
