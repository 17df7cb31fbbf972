/* Kernel-style special statics (kstyle.h): every function's pr_debug
 * descriptor, WARN_ONCE flag, lock key and ratelimit state. The fix moves
 * every line (a comment grows) and changes a bound in handle(): only handle
 * is patched, carrying fresh copies of the statics it uses; other() keeps
 * its own, whose line numbers changed. */
#include "kstyle.h"

struct lock dev_lock;

int handle(int x)
{
    pr_debug("handle %d\n", x);
    if (WARN_ONCE(x < 0, "negative"))
        return -1;
    if (x > 100)
        return 100;
    return x * 2;
}

int other(int x)
{
    pr_debug("other %d\n", x);
    lock_init(&dev_lock);
    if (printk_ratelimit_here())
        return x + 1;
    return x;
}
