/* Functions sharing a section through a section attribute (the kernel's
 * __sched): with -ffunction-sections each still lands in .sched.text, and
 * gcc's clone scale.isra.0 with them. The assembler resolves the call from
 * c4 to the static scale.isra.0 without a relocation. The fix changes c4
 * only: it is carried alone, calling the original scale through a reference. */
#include "kstyle.h"
#include <stdio.h>
extern void ext(int);
extern int flag;

static __attribute__((cold, noinline)) __sched void report(const char *what, int reason)
{
    fprintf(stderr, "%s %d\n", what, reason);
}

static __attribute__((noinline)) __sched int scale(int *v, int n)
{
    return v[0] * n;
}

__sched int c4(int n)
{
    int v[4] = {n, 2, 3, 4};
    if (n < 0)
        report("negative", n);
    return scale(v, n) + 1;
}

__sched int c5(int n)
{
    int v[4] = {n, 5, 6, 7};
    return scale(v, n) - 1;
}
