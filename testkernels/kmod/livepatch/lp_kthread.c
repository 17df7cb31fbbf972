// SPDX-License-Identifier: GPL-2.0
/*
 * Hand-written livepatch of hfx_kthread's hfx_worker_wait(), the function
 * its kernel thread sleeps in: the transition stalls until the thread leaves.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/livepatch.h>
#include "hfx_kthread.h"

static int lp_hfx_worker_wait(struct hfx_worker_state *st)
{
	while (!kthread_should_stop() && !atomic_read(&st->release_req))
		msleep_interruptible(50);
	atomic_set(&st->release_req, 0);
	return 2;
}

static struct klp_func funcs[] = {
	{ .old_name = "hfx_worker_wait", .new_func = lp_hfx_worker_wait, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "hfx_kthread", .funcs = funcs, },
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
MODULE_DESCRIPTION("hfx_kthread worker version 2");
