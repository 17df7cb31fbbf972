// SPDX-License-Identifier: GPL-2.0
/*
 * hotfix_core: the "jump" method of hotfix's kernel backend.
 *
 * A patch module built for livepatch (a `struct klp_patch` of klp_objects and
 * klp_funcs, see include/linux/livepatch.h) is loaded by `hotfix apply
 * --kernel --method jump` in a rewritten copy whose init calls
 * hotfix_jmp_apply(&patch) instead of klp_enable_patch(&patch) (the two have
 * the same signature and, on purpose, names of the same length). This module
 * then, for each klp_func:
 *   - finds the old function by name and sympos in kallsyms (as livepatch
 *     does) and refuses NMI handlers, entry code and noinstr code;
 *   - stops every CPU with interrupts off (stop_machine_cpuslocked on all
 *     online CPUs, text_mutex held so no other text patching is in flight);
 *   - on one CPU, walks the stack of every task (all threads, kernel threads,
 *     each CPU's idle task) with the kernel's reliable unwinder, and gives up
 *     with -EBUSY if a return address (or interrupted IP) lies in an old
 *     function (revert: in a new one), or if a stack cannot be walked;
 *   - checks that each patch site still holds the bytes seen when the patch
 *     was prepared, then writes a 5-byte `jmp rel32` to the new function at
 *     the site: just after ftrace's 5-byte __fentry__ site (which stays
 *     ftrace's), or at the entry (after endbr64) of an untraced function;
 *   - lets every CPU serialize (sync_core) before any of them resumes.
 * The time from the callback's start to the release of the CPUs (the "stop
 * window", interrupts off on all CPUs) is measured and reported.
 *
 * Interface (/proc/hotfix_core, root only):
 *   read:  "patch NAME FUNCS WINDOW_NS STOP_NS APPLIED_SECS" per applied
 *          patch, followed by "func NAME OBJ FUNC SYMPOS OLD SITE NEW" per
 *          function; then "last SEQ NAME OP RC WINDOW_NS STOP_NS PID COMM
 *          WHAT", the outcome of the latest apply or revert (SEQ counts the
 *          operations, so a reader can tell a stale line; WHAT: the blocking
 *          function or the reason of a refusal, free text to end of line).
 *   write: "revert NAME": unpatch under stop_machine (the same stack check,
 *          against the new functions), then drop the reference on the patch
 *          module so that it can be removed;
 *          "expect NAME OBJ FUNC SYMPOS HEX": the bytes the build expects at
 *          a jump site (".." for relocated bytes), for the next apply of NAME
 *          only ("expect NAME" alone clears them).
 * Errors: -EBUSY (a function is on a stack: retry later), -EILSEQ (a patch
 * site does not hold the expected bytes), -EPERM (a refused function), and
 * -ENOENT / -EINVAL / -ERANGE / -ENOMEM.
 *
 * Kernel internals that modules cannot link against are reached through
 * addresses from /proc/kallsyms, given as module parameters ksym_<symbol> by
 * the userspace driver (loader/src/kernel/jump.rs); each is checked against
 * kallsyms (sprint_symbol) before it is used.
 *
 * Invariants: a patch is either fully applied (every site jumps) or not at
 * all; while applied, the patch module holds a reference that only "revert"
 * drops; patches never overlap (a function patched by one is refused to
 * another: stacking is klp's business).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kallsyms.h>
#include <linux/livepatch.h>
#include <linux/stop_machine.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/cpu.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/slab.h>
#include <linux/mutex.h>
#include <linux/timekeeping.h>
#include <asm/sync_core.h>
#include <asm/text-patching.h>

/* ---- kallsyms-resolved kernel internals (module parameters) ---- */

/* Each parameter is the address of the kernel symbol named after "ksym_". */
static unsigned long ksym_stack_trace_save_tsk_reliable; /* reliable unwinder */
static unsigned long ksym_text_poke_kgdb;	/* write text while other CPUs are stopped */
static unsigned long ksym_text_mutex;		/* serializes all text patching */
static unsigned long ksym_stop_machine_cpuslocked; /* stop_machine under cpus_read_lock */
static unsigned long ksym_idle_task;		/* a CPU's idle task */
static unsigned long ksym_ftrace_location;	/* a function's __fentry__ site, or 0 */
static unsigned long ksym_kallsyms_lookup_size_offset; /* size of a symbol */
static unsigned long ksym_kallsyms_on_each_symbol;	/* walk vmlinux symbols */
static unsigned long ksym_module_kallsyms_on_each_symbol; /* walk module symbols */
static unsigned long ksym_jump_label_text_reserved;	/* static-key site in a range? */
static unsigned long ksym_static_call_text_reserved;	/* static-call site in a range? */
static unsigned long ksym___noinstr_text_start;	/* .noinstr.text bounds */
static unsigned long ksym___noinstr_text_end;
static unsigned long ksym___entry_text_start;	/* .entry.text bounds */
static unsigned long ksym___entry_text_end;
module_param(ksym_stack_trace_save_tsk_reliable, ulong, 0400);
module_param(ksym_text_poke_kgdb, ulong, 0400);
module_param(ksym_text_mutex, ulong, 0400);
module_param(ksym_stop_machine_cpuslocked, ulong, 0400);
module_param(ksym_idle_task, ulong, 0400);
module_param(ksym_ftrace_location, ulong, 0400);
module_param(ksym_kallsyms_lookup_size_offset, ulong, 0400);
module_param(ksym_kallsyms_on_each_symbol, ulong, 0400);
module_param(ksym_module_kallsyms_on_each_symbol, ulong, 0400);
module_param(ksym_jump_label_text_reserved, ulong, 0400);
module_param(ksym_static_call_text_reserved, ulong, 0400);
module_param(ksym___noinstr_text_start, ulong, 0400);
module_param(ksym___noinstr_text_end, ulong, 0400);
module_param(ksym___entry_text_start, ulong, 0400);
module_param(ksym___entry_text_end, ulong, 0400);

/* Typed views of the functions above, set once they have been checked. */
static int (*k_stack_reliable)(struct task_struct *, unsigned long *, unsigned int);
static void *(*k_text_poke)(void *, const void *, size_t);
static struct mutex *k_text_mutex;
static int (*k_stop_machine)(cpu_stop_fn_t, void *, const struct cpumask *);
static struct task_struct *(*k_idle_task)(int);
static unsigned long (*k_ftrace_location)(unsigned long);
static int (*k_size_offset)(unsigned long, unsigned long *, unsigned long *);
static int (*k_each_symbol)(int (*)(void *, const char *, struct module *, unsigned long), void *);
static int (*k_each_mod_symbol)(int (*)(void *, const char *, struct module *, unsigned long), void *);
static int (*k_jl_reserved)(void *, void *);
static int (*k_sc_reserved)(void *, void *);

/* NMI handlers outside .noinstr.text: patching them would race with an NMI
 * arriving during the switch (NMIs are not stopped by stop_machine). */
static const char *const nmi_handlers[] = {
	"nmi_handle", "default_do_nmi", "exc_nmi", "unknown_nmi_error",
	"pci_serr_error", "io_check_error", "perf_event_nmi_handler",
	"perf_ibs_nmi_handler", "nmi_cpu_backtrace", "nmi_cpu_backtrace_handler",
	"nmi_panic", "nmi_trigger_cpumask_backtrace", "ghes_notify_nmi",
	"hpwdt_pretimeout", "kgdb_nmi_handler", "mce_raise_notify",
	"crash_nmi_callback", "nmi_shootdown_cpus", "arch_touch_nmi_watchdog",
	NULL
};

/* ---- state ---- */

struct hfx_func {
	const char *obj;		/* "vmlinux" or the module name */
	const char *name;		/* klp_func.old_name */
	unsigned long sympos;		/* klp_func.old_sympos */
	unsigned long old_addr, old_size;	/* the function replaced */
	unsigned long new_addr, new_size;	/* its replacement, in the patch module */
	unsigned long site;		/* where the jump goes */
	u8 saved[JMP32_INSN_SIZE];	/* the site's bytes before the jump */
	u8 jmp[JMP32_INSN_SIZE];	/* the jump */
	bool expected;			/* site checked against the build's bytes */
};

struct hfx_patch {
	struct list_head list;
	struct module *mod;		/* the patch module (referenced while applied) */
	unsigned int nfuncs;
	struct hfx_func *funcs;
	u64 window_ns, stop_ns;		/* of the apply */
	time64_t applied;		/* seconds since the epoch */
};

/* Outcome of the latest operation, for userspace. */
static struct {
	unsigned long seq;		/* operations so far: tells a stale line */
	char name[MODULE_NAME_LEN];
	const char *op;
	int rc;
	u64 window_ns, stop_ns;
	pid_t pid;
	char comm[TASK_COMM_LEN];
	char what[KSYM_SYMBOL_LEN + 128];
} last;

/* Expected bytes at the jump sites, staged by the driver for the next apply
 * of one patch (from the module's .hotfix.expect section, written by the
 * build from the original object): "HEX" is 10 characters, ".." for a byte
 * a relocation fills in at load. Functions without one are not checked. */
struct hfx_expect {
	char obj[MODULE_NAME_LEN];
	char func[128];
	unsigned long sympos;
	char hex[2 * JMP32_INSN_SIZE + 1];
};
static char expect_for[MODULE_NAME_LEN];	/* the patch they are for */
static struct hfx_expect expects[32];
static unsigned int nexpects;

static LIST_HEAD(patches);		/* applied patches, newest first */
static DEFINE_MUTEX(core_lock);		/* protects patches and last */
static unsigned long trace[256];	/* stack buffer, used under stop_machine only */

/* ---- the switch, run by every CPU under stop_machine ---- */

struct hfx_op {
	struct hfx_patch *p;
	bool revert;			/* check new functions, write saved bytes */
	atomic_t arrived;		/* CPUs that entered the callback */
	atomic_t serialized;		/* CPUs that ran sync_core after the write */
	int done;			/* set by the master once the text is written */
	int rc;
	u64 t0, t1;			/* master's callback entry and release */
	struct task_struct *busy;	/* task found in a function, if any */
	unsigned long busy_addr;	/* the address found (0: unreliable stack) */
};

/* Is addr inside one of the functions that must not be on a stack? */
static bool hfx_hit(struct hfx_op *op, unsigned long addr)
{
	unsigned int i;

	for (i = 0; i < op->p->nfuncs; i++) {
		struct hfx_func *f = &op->p->funcs[i];
		unsigned long start = op->revert ? f->new_addr : f->old_addr;
		unsigned long size = op->revert ? f->new_size : f->old_size;

		if (addr >= start && addr < start + size)
			return true;
	}
	return false;
}

/* Walk one task's stack; -EBUSY (and op->busy set) when it is in the way. */
static int hfx_check_task(struct hfx_op *op, struct task_struct *t)
{
	int n, i;

	/* A task running right now on another CPU is a stopper thread spinning
	 * in stop_machine's own code; its saved stack pointer is stale. */
	if (t != current && READ_ONCE(t->on_cpu))
		return 0;
	n = k_stack_reliable(t, trace, ARRAY_SIZE(trace));
	if (n < 0) {			/* not walkable: count it as busy */
		op->busy = t;
		op->busy_addr = 0;
		return -EBUSY;
	}
	for (i = 0; i < n; i++) {
		if (hfx_hit(op, trace[i])) {
			op->busy = t;
			op->busy_addr = trace[i];
			return -EBUSY;
		}
	}
	return 0;
}

/* Every task: each thread of each process, then each CPU's idle task. All
 * CPUs are in stop_machine with interrupts off, so no CPU is inside a
 * task-list update (those hold tasklist_lock with interrupts off) and every
 * task that was interrupted in kernel code has its interrupted context
 * (pt_regs with the IP) on its own stack, which the unwinder reports. */
static int hfx_check_stacks(struct hfx_op *op)
{
	struct task_struct *g, *t;
	int cpu, rc;

	for_each_process_thread(g, t) {
		rc = hfx_check_task(op, t);
		if (rc)
			return rc;
	}
	for_each_online_cpu(cpu) {
		rc = hfx_check_task(op, k_idle_task(cpu));
		if (rc)
			return rc;
	}
	return 0;
}

/* The master's work: check, verify, write. */
static int hfx_switch_master(struct hfx_op *op)
{
	unsigned int i;
	int rc;

	rc = hfx_check_stacks(op);
	if (rc)
		return rc;
	for (i = 0; i < op->p->nfuncs; i++) {
		struct hfx_func *f = &op->p->funcs[i];
		const u8 *want = op->revert ? f->jmp : f->saved;

		if (memcmp((void *)f->site, want, JMP32_INSN_SIZE))
			return -EILSEQ;
	}
	for (i = 0; i < op->p->nfuncs; i++) {
		struct hfx_func *f = &op->p->funcs[i];

		k_text_poke((void *)f->site, op->revert ? f->saved : f->jmp,
			    JMP32_INSN_SIZE);
	}
	return 0;
}

/* stop_machine callback, run by every online CPU with interrupts off. The
 * first CPU to arrive is the master; the others wait for its write and then
 * serialize their instruction stream (cross-modifying code: SDM 8.1.3). */
static int hfx_switch(void *data)
{
	struct hfx_op *op = data;
	int others = num_online_cpus() - 1;

	if (atomic_inc_return(&op->arrived) == 1) {
		op->t0 = ktime_get_mono_fast_ns();
		op->rc = hfx_switch_master(op);
		smp_store_release(&op->done, 1);	/* publish rc, release the others */
		sync_core();
		while (atomic_read(&op->serialized) < others)
			cpu_relax();			/* every CPU has serialized */
		op->t1 = ktime_get_mono_fast_ns();
		return 0;
	}
	while (!smp_load_acquire(&op->done))
		cpu_relax();
	sync_core();
	atomic_inc(&op->serialized);
	return 0;
}

/* Runs the switch; fills `last` (caller holds core_lock). */
static int hfx_run(struct hfx_patch *p, bool revert)
{
	struct hfx_op op = { .p = p, .revert = revert };
	u64 s0, s1;
	int rc;

	cpus_read_lock();			/* lock order: cpus, then text_mutex */
	mutex_lock(k_text_mutex);		/* no text_poke_bp half-done elsewhere */
	s0 = ktime_get_mono_fast_ns();
	rc = k_stop_machine(hfx_switch, &op, cpu_online_mask);
	s1 = ktime_get_mono_fast_ns();
	mutex_unlock(k_text_mutex);
	cpus_read_unlock();
	if (!rc)
		rc = op.rc;
	last.rc = rc;
	last.window_ns = op.t1 - op.t0;
	last.stop_ns = s1 - s0;
	last.pid = 0;
	last.comm[0] = '\0';
	last.what[0] = '\0';
	if (rc == -EBUSY && op.busy) {
		last.pid = task_pid_nr(op.busy);
		get_task_comm(last.comm, op.busy);
		if (op.busy_addr)
			sprint_symbol(last.what, op.busy_addr);
		else
			strscpy(last.what, "(stack not reliably walkable)", sizeof(last.what));
	} else if (rc == -EILSEQ) {
		strscpy(last.what, "a patch site changed since it was read", sizeof(last.what));
	}
	return rc;
}

/* ---- resolving the klp table ---- */

struct hfx_find {
	const char *obj, *name;		/* obj NULL: vmlinux */
	unsigned long sympos, count, addr;
};

static int hfx_find_cb(void *data, const char *name, struct module *mod,
		       unsigned long addr)
{
	struct hfx_find *f = data;

	if (f->obj && (!mod || strcmp(f->obj, mod->name)))
		return 0;
	if (strcmp(f->name, name))
		return 0;
	f->count++;
	if (!f->sympos) {		/* 0: must be unique; count them all */
		if (f->count == 1)
			f->addr = addr;
		return 0;
	}
	if (f->count == f->sympos) {	/* N: the Nth occurrence, as livepatch */
		f->addr = addr;
		return 1;		/* stop walking */
	}
	return 0;
}

static int hfx_refuse(const char *fmt, const char *a, const char *b)
{
	snprintf(last.what, sizeof(last.what), fmt, a, b);
	return -EPERM;
}

static int hfx_prepare_func(const char *patch, struct hfx_func *f,
			    struct klp_object *obj, struct klp_func *kf)
{
	struct hfx_find find = {
		.obj = obj->name, .name = kf->old_name, .sympos = kf->old_sympos,
	};
	unsigned long off, ftr;
	const char *const *n;
	struct hfx_patch *other;
	long rel;
	unsigned int i;

	f->obj = obj->name ? obj->name : "vmlinux";
	f->name = kf->old_name;
	f->sympos = kf->old_sympos;
	if (!kf->old_name || !kf->new_func)
		return hfx_refuse("%s: a klp_func without old_name or new_func%s", f->obj, "");
	for (n = nmi_handlers; *n; n++)
		if (!strcmp(*n, kf->old_name))
			return hfx_refuse("%s: %s is an NMI handler (refused: NMI, entry and noinstr code cannot be switched under stop_machine)", f->obj, kf->old_name);
	if (obj->name && !strcmp(obj->name, THIS_MODULE->name))
		return hfx_refuse("%s: %s belongs to the jump core itself", f->obj, kf->old_name);
	if (obj->name)
		k_each_mod_symbol(hfx_find_cb, &find);
	else
		k_each_symbol(hfx_find_cb, &find);
	if (!find.count) {
		snprintf(last.what, sizeof(last.what), "%s: symbol %s not found in kallsyms",
			 f->obj, kf->old_name);
		return -ENOENT;
	}
	if ((!find.sympos && find.count > 1) || (find.sympos && find.count < find.sympos)) {
		snprintf(last.what, sizeof(last.what),
			 "%s: symbol %s: %lu occurrences, sympos %lu", f->obj,
			 kf->old_name, find.count, find.sympos);
		return -EINVAL;
	}
	f->old_addr = find.addr;
	f->new_addr = (unsigned long)kf->new_func;
	if (!k_size_offset(f->old_addr, &f->old_size, &off) || off ||
	    !k_size_offset(f->new_addr, &f->new_size, &off) || off) {
		snprintf(last.what, sizeof(last.what), "%s: %s: no kallsyms size",
			 f->obj, kf->old_name);
		return -EINVAL;
	}
	if ((f->old_addr >= ksym___noinstr_text_start && f->old_addr < ksym___noinstr_text_end) ||
	    (f->old_addr >= ksym___entry_text_start && f->old_addr < ksym___entry_text_end))
		return hfx_refuse("%s: %s is in .noinstr.text or .entry.text (refused: NMI, entry and noinstr code cannot be switched under stop_machine)", f->obj, kf->old_name);
	/* The site: after ftrace's __fentry__ site when there is one (ftrace
	 * keeps owning those 5 bytes), else at the entry, after endbr64. */
	ftr = k_ftrace_location(f->old_addr);
	if (ftr) {
		if (ftr != f->old_addr && ftr != f->old_addr + ENDBR_INSN_SIZE)
			return hfx_refuse("%s: %s: the __fentry__ site is not at the entry", f->obj, kf->old_name);
		f->site = ftr + MCOUNT_INSN_SIZE;
	} else {
		f->site = f->old_addr;
		if (is_endbr(*(u32 *)f->site))
			f->site += ENDBR_INSN_SIZE;
	}
	if (f->site + JMP32_INSN_SIZE > f->old_addr + f->old_size)
		return hfx_refuse("%s: %s is too small for a 5-byte jump after its entry", f->obj, kf->old_name);
	if (k_jl_reserved((void *)f->site, (void *)(f->site + JMP32_INSN_SIZE - 1)) ||
	    k_sc_reserved((void *)f->site, (void *)(f->site + JMP32_INSN_SIZE - 1)))
		return hfx_refuse("%s: %s: a static key or static call site overlaps the jump", f->obj, kf->old_name);
	/* Already patched by another hotfix jump patch? */
	list_for_each_entry(other, &patches, list)
		for (i = 0; i < other->nfuncs; i++)
			if (other->funcs[i].old_addr == f->old_addr)
				return hfx_refuse("%s: %s is patched by another jump patch (revert it first)", f->obj, kf->old_name);
	memcpy(f->saved, (void *)f->site, JMP32_INSN_SIZE);
	/* The build's expected bytes, when staged for this patch. */
	for (i = 0; !strcmp(expect_for, patch) && i < nexpects; i++) {
		struct hfx_expect *e = &expects[i];
		unsigned int b;

		if (strcmp(e->obj, f->obj) || strcmp(e->func, f->name) ||
		    e->sympos != f->sympos)
			continue;
		for (b = 0; b < JMP32_INSN_SIZE; b++) {
			u8 want;

			if (e->hex[2 * b] == '.')	/* relocated at load: any */
				continue;
			if (hex2bin(&want, &e->hex[2 * b], 1) || want != f->saved[b]) {
				snprintf(last.what, sizeof(last.what),
					 "%s: %s: site %#lx holds %5phN, the build expected %s",
					 f->obj, f->name, f->site, f->saved, e->hex);
				return -EILSEQ;
			}
		}
		f->expected = true;
	}
	/* An int3 (kprobe, text_poke_bp) or a jump already at the site. */
	if (f->saved[0] == INT3_INSN_OPCODE || f->saved[0] == JMP32_INSN_OPCODE)
		return hfx_refuse("%s: %s: the site already starts with int3 or jmp (kprobe or another patcher)", f->obj, kf->old_name);
	rel = (long)f->new_addr - (long)(f->site + JMP32_INSN_SIZE);
	if (rel != (s32)rel)
		return hfx_refuse("%s: %s: new function out of jmp rel32 range", f->obj, kf->old_name);
	f->jmp[0] = JMP32_INSN_OPCODE;
	memcpy(&f->jmp[1], &rel, 4);		/* little-endian rel32 */
	return 0;
}

/* ---- API for patch modules ---- */

/**
 * hotfix_jmp_apply - apply a klp-shaped patch with the jump method
 * @patch: the patch module's klp_patch (only objs/funcs/mod are used)
 *
 * Called from the patch module's init. Returns 0 when every function now
 * jumps to its replacement; otherwise nothing changed and the module init
 * fails with the error (see the header comment).
 */
int hotfix_jmp_apply(struct klp_patch *patch)
{
	struct klp_object *obj;
	struct klp_func *kf;
	struct hfx_patch *p;
	unsigned int n = 0;
	int rc;

	if (!patch || !patch->mod || !patch->objs)
		return -EINVAL;
	mutex_lock(&core_lock);
	last.seq++;
	strscpy(last.name, patch->mod->name, sizeof(last.name));
	last.op = "apply";
	last.rc = 0;
	last.window_ns = last.stop_ns = 0;
	last.pid = 0;
	last.comm[0] = '\0';
	last.what[0] = '\0';
	rc = -EPERM;
	if (patch->replace) {
		strscpy(last.what, "atomic replace is klp-only", sizeof(last.what));
		goto out;
	}
	klp_for_each_object_static(patch, obj) {
		if (obj->callbacks.pre_patch || obj->callbacks.post_patch ||
		    obj->callbacks.pre_unpatch || obj->callbacks.post_unpatch) {
			strscpy(last.what, "klp callbacks are klp-only", sizeof(last.what));
			goto out;
		}
		klp_for_each_func_static(obj, kf)
			n++;
	}
	rc = -EINVAL;
	if (!n) {
		strscpy(last.what, "no functions", sizeof(last.what));
		goto out;
	}
	rc = -ENOMEM;
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		goto out;
	p->funcs = kcalloc(n, sizeof(*p->funcs), GFP_KERNEL);
	if (!p->funcs)
		goto free;
	p->mod = patch->mod;
	klp_for_each_object_static(patch, obj)
		klp_for_each_func_static(obj, kf) {
			rc = hfx_prepare_func(patch->mod->name,
					      &p->funcs[p->nfuncs], obj, kf);
			if (rc)
				goto free;
			p->nfuncs++;
		}
	rc = -ENOENT;
	if (!try_module_get(p->mod))		/* held while applied */
		goto free;
	rc = hfx_run(p, false);
	if (rc) {
		module_put(p->mod);
		goto free;
	}
	p->window_ns = last.window_ns;
	p->stop_ns = last.stop_ns;
	p->applied = ktime_get_real_seconds();
	list_add(&p->list, &patches);
	pr_info("%s applied (%u functions, stop window %llu ns)\n",
		p->mod->name, p->nfuncs, p->window_ns);
	goto out;
free:
	kfree(p->funcs);
	kfree(p);
out:
	last.rc = rc;
	expect_for[0] = '\0';		/* staged bytes serve one attempt */
	nexpects = 0;
	mutex_unlock(&core_lock);
	return rc;
}
EXPORT_SYMBOL_GPL(hotfix_jmp_apply);

static int hfx_revert(const char *name)
{
	struct hfx_patch *p, *found = NULL;
	int rc;

	mutex_lock(&core_lock);
	last.seq++;
	strscpy(last.name, name, sizeof(last.name));
	last.op = "revert";
	last.window_ns = last.stop_ns = 0;
	last.pid = 0;
	last.comm[0] = '\0';
	last.what[0] = '\0';
	list_for_each_entry(p, &patches, list)
		if (!strcmp(p->mod->name, name))
			found = p;
	rc = -ENOENT;
	if (!found)
		goto out;
	rc = hfx_run(found, true);
	if (rc)
		goto out;
	list_del(&found->list);
	pr_info("%s reverted (stop window %llu ns)\n", name, last.window_ns);
	module_put(found->mod);			/* now it may be removed */
	kfree(found->funcs);
	kfree(found);
out:
	last.rc = rc;
	mutex_unlock(&core_lock);
	return rc;
}

/* ---- /proc/hotfix_core ---- */

static int hfx_show(struct seq_file *m, void *v)
{
	struct hfx_patch *p;
	unsigned int i;

	mutex_lock(&core_lock);
	list_for_each_entry_reverse(p, &patches, list) {
		seq_printf(m, "patch %s %u %llu %llu %lld\n", p->mod->name,
			   p->nfuncs, p->window_ns, p->stop_ns, (long long)p->applied);
		for (i = 0; i < p->nfuncs; i++) {
			struct hfx_func *f = &p->funcs[i];

			seq_printf(m, "func %s %s %s %lu 0x%lx 0x%lx 0x%lx %s\n",
				   p->mod->name, f->obj, f->name, f->sympos,
				   f->old_addr, f->site, f->new_addr,
				   f->expected ? "expected" : "unchecked");
		}
	}
	if (last.op)
		seq_printf(m, "last %lu %s %s %d %llu %llu %d %s %s\n", last.seq, last.name,
			   last.op, last.rc, last.window_ns, last.stop_ns, last.pid,
			   last.comm[0] ? last.comm : "-", last.what);
	mutex_unlock(&core_lock);
	return 0;
}

static int hfx_open(struct inode *inode, struct file *file)
{
	return single_open(file, hfx_show, NULL);
}

/* "revert NAME", or "expect NAME [OBJ FUNC SYMPOS HEX]" (stage one
 * expectation for the next apply of NAME; without the rest: clear them). */
static ssize_t hfx_write(struct file *file, const char __user *ubuf,
			 size_t len, loff_t *ppos)
{
	static char buf[512];		/* under core_lock */
	char name[MODULE_NAME_LEN];
	struct hfx_expect e = {};
	int rc, n;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	mutex_lock(&core_lock);
	rc = -EFAULT;
	if (copy_from_user(buf, ubuf, len))
		goto out;
	buf[len] = '\0';
	rc = -EINVAL;
	if (!strncmp(buf, "revert ", 7)) {
		strscpy(name, strim(buf + 7), sizeof(name));
		mutex_unlock(&core_lock);
		rc = hfx_revert(name);
		return rc ? rc : len;
	}
	if (strncmp(buf, "expect ", 7))
		goto out;
	n = sscanf(buf + 7, "%55s %55s %127s %lu %10s", name, e.obj, e.func,
		   &e.sympos, e.hex);
	if (n != 1 && (n != 5 || strlen(e.hex) != 2 * JMP32_INSN_SIZE))
		goto out;
	if (strcmp(expect_for, name)) {		/* another patch: start over */
		strscpy(expect_for, name, sizeof(expect_for));
		nexpects = 0;
	}
	if (n == 1) {
		nexpects = 0;
	} else {
		rc = -ENOSPC;
		if (nexpects == ARRAY_SIZE(expects))
			goto out;
		expects[nexpects++] = e;
	}
	rc = len;
out:
	mutex_unlock(&core_lock);
	return rc;
}

static const struct proc_ops hfx_ops = {
	.proc_open = hfx_open,
	.proc_read = seq_read,
	.proc_write = hfx_write,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
};

/* ---- init: check the kallsyms addresses before using any ---- */

/* Is addr the start of the symbol `name` (kallsyms' view)? */
static bool hfx_is_symbol(unsigned long addr, const char *name)
{
	char buf[KSYM_SYMBOL_LEN];
	size_t n = strlen(name);

	if (!addr)
		return false;
	sprint_symbol(buf, addr);
	/* "name+0x0/0x..." */
	return !strncmp(buf, name, n) && !strncmp(buf + n, "+0x0/", 5);
}

#define HFX_CHECK(sym)							\
	do {								\
		if (!hfx_is_symbol(ksym_##sym, #sym)) {			\
			pr_err("ksym_" #sym "=%#lx is not " #sym		\
			       " (pass addresses from /proc/kallsyms)\n",	\
			       ksym_##sym);				\
			return -EINVAL;					\
		}							\
	} while (0)

static int __init hfx_init(void)
{
	HFX_CHECK(stack_trace_save_tsk_reliable);
	HFX_CHECK(text_poke_kgdb);
	HFX_CHECK(text_mutex);
	HFX_CHECK(stop_machine_cpuslocked);
	HFX_CHECK(idle_task);
	HFX_CHECK(ftrace_location);
	HFX_CHECK(kallsyms_lookup_size_offset);
	HFX_CHECK(kallsyms_on_each_symbol);
	HFX_CHECK(module_kallsyms_on_each_symbol);
	HFX_CHECK(jump_label_text_reserved);
	HFX_CHECK(static_call_text_reserved);
	/* Section bounds share their address with other symbols: only order. */
	if (!ksym___noinstr_text_start || ksym___noinstr_text_end <= ksym___noinstr_text_start ||
	    !ksym___entry_text_start || ksym___entry_text_end <= ksym___entry_text_start) {
		pr_err("ksym___noinstr_text_* / ksym___entry_text_* missing or inverted\n");
		return -EINVAL;
	}
	k_stack_reliable = (void *)ksym_stack_trace_save_tsk_reliable;
	k_text_poke = (void *)ksym_text_poke_kgdb;
	k_text_mutex = (struct mutex *)ksym_text_mutex;
	k_stop_machine = (void *)ksym_stop_machine_cpuslocked;
	k_idle_task = (void *)ksym_idle_task;
	k_ftrace_location = (void *)ksym_ftrace_location;
	k_size_offset = (void *)ksym_kallsyms_lookup_size_offset;
	k_each_symbol = (void *)ksym_kallsyms_on_each_symbol;
	k_each_mod_symbol = (void *)ksym_module_kallsyms_on_each_symbol;
	k_jl_reserved = (void *)ksym_jump_label_text_reserved;
	k_sc_reserved = (void *)ksym_static_call_text_reserved;
	if (!proc_create("hotfix_core", 0600, NULL, &hfx_ops))
		return -ENOMEM;
	return 0;
}

/* Patch modules reference hotfix_jmp_apply, so the core cannot be removed
 * while one is loaded; and an applied patch keeps its module loaded. */
static void __exit hfx_exit(void)
{
	remove_proc_entry("hotfix_core", NULL);
}

module_init(hfx_init);
module_exit(hfx_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("hotfix jump core: stop all CPUs, check all stacks, write 5-byte jumps");
