// SPDX-License-Identifier: GPL-2.0
/*
 * warn: raises one kernel WARNING on load and loads fine, so the command
 * that loads it goes on. Tests that `p2pnvme run` fails a run whose kernel
 * warned (exit 3) unless --allow-warn.
 */
#include <linux/bug.h>
#include <linux/compiler.h>
#include <linux/module.h>

static int __init warn_init(void)
{
	int fire = 1;

	/* Keep the compiler from proving the condition at build time. */
	OPTIMIZER_HIDE_VAR(fire);
	WARN(fire, "warn: a test WARNING on load\n");
	return 0;
}

static void __exit warn_exit(void)
{
}

module_init(warn_init);
module_exit(warn_exit);
MODULE_DESCRIPTION("One WARNING on load (p2pnvme kernel health test)");
MODULE_LICENSE("GPL");
