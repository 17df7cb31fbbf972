// SPDX-License-Identifier: GPL-2.0
/*
 * Cumulative (atomic replace) hand-written livepatch: only the fix of hfx_x2apic's XSA-108-class range
 * check. A reference for the generated modules of `hotfix build --kernel`
 * and the test input of the apply/list/revert tier.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include "hfx_x2apic.h"

static int lp_x2apic_msr_read(struct vcpu *v, u32 msr, u64 *val)
{
	/* Only the register page is backed: 0x800-0x8ff. (The original's
	 * static call counter is not kept: a hand-written patch cannot reach
	 * it; the generated one of `hotfix build --kernel` does.) */
	if (msr < APIC_BASE_MSR || msr > APIC_BASE_MSR + 0xff)
		return -EINVAL;
	*val = v->apic.regs[msr - APIC_BASE_MSR];
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "x2apic_msr_read", .new_func = lp_x2apic_msr_read, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "hfx_x2apic", .funcs = funcs, },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
#if 1
	.replace = true,
#endif
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
MODULE_DESCRIPTION("cumulative: x2APIC MSR range fix only (atomic replace)");
