// SPDX-License-Identifier: GPL-2.0
/*
 * A livepatch-shaped module naming vmlinux's NMI handler default_do_nmi(),
 * which lives in .noinstr.text: the jump core must refuse it (an NMI can
 * arrive while every other CPU is stopped). Never applied successfully.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static void lp_default_do_nmi(struct pt_regs *regs)
{
}

static struct klp_func funcs[] = {
	{ .old_name = "default_do_nmi", .new_func = lp_default_do_nmi, },
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
MODULE_DESCRIPTION("must be refused: patches the NMI handler default_do_nmi");
