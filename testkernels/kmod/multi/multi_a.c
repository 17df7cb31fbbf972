// SPDX-License-Identifier: GPL-2.0
/*
 * hfx_multi: a module of two objects that both define a static function
 * named scale(). kallsyms lists both in the module; livepatch tells them
 * apart by position (old_sympos / .klp.sym ...,N), counted over the whole
 * module's symbol table. /proc/hfx_multi prints "a A b B" from both objects.
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

#include "multi.h"

static noinline __attribute__((__noipa__)) int scale(int x)
{
	return x * 2;
}

int hfx_multi_a(int x)
{
	return scale(x) + 1;
}

static int multi_show(struct seq_file *m, void *p)
{
	seq_printf(m, "a %d b %d\n", hfx_multi_a(10), hfx_multi_b(10));
	return 0;
}

static int __init hfx_multi_init(void)
{
	return proc_create_single("hfx_multi", 0444, NULL, multi_show) ? 0 : -ENOMEM;
}

static void __exit hfx_multi_exit(void)
{
	remove_proc_entry("hfx_multi", NULL);
}

module_init(hfx_multi_init);
module_exit(hfx_multi_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("hotfix test module: same-named statics in two objects");
