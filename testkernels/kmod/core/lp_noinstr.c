// SPDX-License-Identifier: GPL-2.0
/*
 * A livepatch-shaped module naming vmlinux's page-fault entry
 * exc_page_fault(), which is noinstr (in .noinstr.text) but not an NMI
 * handler: the jump core must refuse it by its section. Never applied.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static void lp_exc_page_fault(struct pt_regs *regs, unsigned long error_code)
{
}

static struct klp_func funcs[] = {
	{ .old_name = "exc_page_fault", .new_func = lp_exc_page_fault, },
	{ }
};

static struct klp_object objs[] = {
	{ .funcs = funcs, },	/* vmlinux */
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int lp_init(void)
{
	return klp_enable_patch(&patch);
}

static void lp_exit(void)
{
}

module_init(lp_init);
module_exit(lp_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
MODULE_DESCRIPTION("must be refused: patches the noinstr function exc_page_fault");
