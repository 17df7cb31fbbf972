// SPDX-License-Identifier: GPL-2.0
/*
 * hfx_kthread: a kernel thread that sleeps inside the function a fix
 * replaces, so a livepatch transition cannot complete while it stays there.
 *
 * /proc/hfx_kthread: read for "worker version N" (N: the version of the code that ran last);
 * write "release" to let the worker leave hfx_worker_wait() once.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

#include "hfx_kthread.h"

static struct task_struct *worker;
static struct hfx_worker_state state;

/* The worker waits here until released: the function to be patched.
 * Returns the version of the code that ran. */
static noinline __attribute__((__noipa__)) int hfx_worker_wait(struct hfx_worker_state *st)
{
	while (!kthread_should_stop() && !atomic_read(&st->release_req))
		msleep_interruptible(50);
	atomic_set(&st->release_req, 0);
	return 1;
}

static int hfx_worker(void *unused)
{
	while (!kthread_should_stop()) {
		WRITE_ONCE(state.version, hfx_worker_wait(&state));
		/* Outside the patched function for a while after each release,
		 * so that a pending livepatch transition can complete. */
		msleep_interruptible(3000);
	}
	return 0;
}

static int kthread_show(struct seq_file *m, void *p)
{
	seq_printf(m, "worker version %d\n", READ_ONCE(state.version));
	return 0;
}

static int kthread_open(struct inode *inode, struct file *file)
{
	return single_open(file, kthread_show, NULL);
}

static ssize_t kthread_write(struct file *file, const char __user *ubuf,
			     size_t len, loff_t *ppos)
{
	char buf[16];

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = '\0';
	if (strncmp(buf, "release", 7))
		return -EINVAL;
	atomic_set(&state.release_req, 1);
	return len;
}

static const struct proc_ops kthread_ops = {
	.proc_open = kthread_open,
	.proc_read = seq_read,
	.proc_write = kthread_write,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
};

static int __init hfx_kthread_init(void)
{
	worker = kthread_run(hfx_worker, NULL, "hfx_worker");
	if (IS_ERR(worker))
		return PTR_ERR(worker);
	if (!proc_create("hfx_kthread", 0600, NULL, &kthread_ops)) {
		kthread_stop(worker);
		return -ENOMEM;
	}
	return 0;
}

static void __exit hfx_kthread_exit(void)
{
	remove_proc_entry("hfx_kthread", NULL);
	kthread_stop(worker);
}

module_init(hfx_kthread_init);
module_exit(hfx_kthread_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("hotfix test module: kthread inside the patched function");
