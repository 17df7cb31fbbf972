// SPDX-License-Identifier: GPL-2.0
/*
 * hfx_x2apic: a model of a hypervisor's x2APIC MSR intercept, carrying the
 * XSA-108 bug class (CVE-2014-7188): the intercept accepts the whole
 * architectural x2APIC MSR range 0x800-0xbff, but the virtual APIC register
 * page only backs 0x800-0x8ff, so a guest RDMSR of 0x900.. reads memory
 * beyond the register page (here: a per-vCPU secret).
 *
 * Interface: /proc/hfx_x2apic. Write "MSR" (hex or decimal) to issue a guest
 * RDMSR; read to see "msr 0x... = 0x..." or "msr 0x... #GP".
 * /proc/hfx_x2apic_stats reports the intercept's counters.
 * /proc/hfx_x2apic_trace: write 1 or 0 to switch the static key that traces
 * each RDMSR (pr_info); read to see its state.
 *
 * Other cases for live patching exercised here: static functions, a static
 * local, a pr_warn with __LINE__, WARN_ON_ONCE (__bug_table), a jump label
 * (static key), copy_from_user, inline user access (__ex_table and the
 * stac/clac alternatives) and an __init function.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/jump_label.h>
#include <linux/kstrtox.h>

#include "hfx_x2apic.h"

static struct vcpu vcpu0;
static DEFINE_MUTEX(vcpu_lock);
/* Exported: a livepatch of a function using this static branch carries a
 * __jump_table entry whose key the module loader must resolve when the
 * livepatch loads (see docs/kernel.md, "special sections"). */
DEFINE_STATIC_KEY_FALSE(hfx_trace_msr);
EXPORT_SYMBOL_GPL(hfx_trace_msr);
static unsigned long gp_faults;

/* The intercept. Returns 0 with *val set, or -EINVAL for #GP. The static
 * local counts every call (a fix must keep using the running counter).
 * noipa: no constprop/isra clone, so that hand-written livepatches (see
 * ../livepatch) can name and call it with its source-level signature. */
static noinline __attribute__((__noipa__)) int x2apic_msr_read(struct vcpu *v, u32 msr, u64 *val)
{
	static unsigned long reads;
	u32 reg;

	v->msr_reads = ++reads;
	/* BUG (XSA-108 class): 0xbff is the end of the architectural range,
	 * not of the register page. */
	if (msr < APIC_BASE_MSR || msr > APIC_BASE_MSR + 0x3ff)
		return -EINVAL;
	reg = msr - APIC_BASE_MSR;
	*val = v->apic.regs[reg];
	return 0;
}

static noinline void note_gp(struct vcpu *v, u32 msr)
{
	gp_faults++;
	pr_warn("vcpu%d: #GP on rdmsr %#x (line %d)\n", v->id, msr, __LINE__);
}

static ssize_t msr_write(struct file *file, const char __user *ubuf,
			 size_t len, loff_t *ppos)
{
	char buf[32];
	u32 msr;
	u64 val = 0;
	int rc;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = '\0';
	if (kstrtou32(strim(buf), 0, &msr))
		return -EINVAL;
	if (static_branch_unlikely(&hfx_trace_msr))
		pr_info("vcpu0: rdmsr %#x\n", msr);
	mutex_lock(&vcpu_lock);
	rc = x2apic_msr_read(&vcpu0, msr, &val);
	WARN_ON_ONCE(rc == 0 && msr == 0);
	if (rc)
		note_gp(&vcpu0, msr);
	vcpu0.last_msr = msr;
	vcpu0.last_rc = rc;
	vcpu0.last_val = val;
	mutex_unlock(&vcpu_lock);
	return len;
}

static int msr_show(struct seq_file *m, void *p)
{
	mutex_lock(&vcpu_lock);
	if (vcpu0.last_rc)
		seq_printf(m, "msr %#x #GP\n", vcpu0.last_msr);
	else
		seq_printf(m, "msr %#x = %#llx\n", vcpu0.last_msr, vcpu0.last_val);
	mutex_unlock(&vcpu_lock);
	return 0;
}

static int msr_open(struct inode *inode, struct file *file)
{
	return single_open(file, msr_show, NULL);
}

static const struct proc_ops msr_ops = {
	.proc_open = msr_open,
	.proc_read = seq_read,
	.proc_write = msr_write,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
};

static int stats_show(struct seq_file *m, void *p)
{
	seq_printf(m, "gp_faults %lu\nmsr_reads %lu\n", gp_faults, vcpu0.msr_reads);
	return 0;
}

static ssize_t trace_write(struct file *file, const char __user *ubuf,
			   size_t len, loff_t *ppos)
{
	char c;

	if (len == 0)
		return -EINVAL;
	/* Inline user access: an __ex_table entry (a fault on ubuf lands on
	 * efault) and stac/clac alternatives in this function. */
	if (!user_access_begin(ubuf, 1))
		return -EFAULT;
	unsafe_get_user(c, ubuf, efault);
	user_access_end();
	if (c == '1')
		static_branch_enable(&hfx_trace_msr);
	else if (c == '0')
		static_branch_disable(&hfx_trace_msr);
	else
		return -EINVAL;
	return len;
efault:
	user_access_end();
	return -EFAULT;
}

static int trace_show(struct seq_file *m, void *p)
{
	seq_printf(m, "%d\n", static_key_enabled(&hfx_trace_msr) ? 1 : 0);
	return 0;
}

static int trace_open(struct inode *inode, struct file *file)
{
	return single_open(file, trace_show, NULL);
}

static const struct proc_ops trace_ops = {
	.proc_open = trace_open,
	.proc_read = seq_read,
	.proc_write = trace_write,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
};

static int __init hfx_x2apic_init(void)
{
	int i;

	vcpu0.id = 0;
	for (i = 0; i < 256; i++)
		vcpu0.apic.regs[i] = 0x1000 + i;
	for (i = 0; i < 768; i++)
		vcpu0.apic.private_state[i] = 0x5ec2e700 + i;
	vcpu0.last_msr = APIC_BASE_MSR;
	vcpu0.last_val = vcpu0.apic.regs[0];
	if (!proc_create("hfx_x2apic", 0600, NULL, &msr_ops))
		return -ENOMEM;
	if (!proc_create_single("hfx_x2apic_stats", 0400, NULL, stats_show)) {
		remove_proc_entry("hfx_x2apic", NULL);
		return -ENOMEM;
	}
	if (!proc_create("hfx_x2apic_trace", 0600, NULL, &trace_ops)) {
		remove_proc_entry("hfx_x2apic_stats", NULL);
		remove_proc_entry("hfx_x2apic", NULL);
		return -ENOMEM;
	}
	return 0;
}

static void __exit hfx_x2apic_exit(void)
{
	remove_proc_entry("hfx_x2apic_trace", NULL);
	remove_proc_entry("hfx_x2apic_stats", NULL);
	remove_proc_entry("hfx_x2apic", NULL);
}

module_init(hfx_x2apic_init);
module_exit(hfx_x2apic_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("hotfix test module: x2APIC MSR intercept (XSA-108 bug class)");
