// SPDX-License-Identifier: GPL-2.0
/* The second object of hfx_multi: another static scale(). */
#include <linux/kernel.h>

#include "multi.h"

static noinline __attribute__((__noipa__)) int scale(int x)
{
	return x * 3;
}

int hfx_multi_b(int x)
{
	return scale(x) + 2;
}
