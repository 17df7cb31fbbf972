/* A fix that only moves pr_debug lines (and a lock key and ratelimit state
 * with them): the dynamic-debug descriptors differ in their line numbers
 * only, which is not a functional change (exit status 5). */
#include "kstyle.h"

struct lock dev_lock;


/* probe(): called once per device. */
int probe(int x)
{

    pr_debug("probe %d\n", x);

    lock_init(&dev_lock);
    return x + 3;
}

int remove_dev(int x)
{
    if (printk_ratelimit_here())

        pr_debug("remove %d\n", x);
    return x - 1;
}
