/* __init code only: two __init functions share .init.text and register
 * through an initcall table; the fix changes setup_b only. Init code ran
 * at boot or module load: refused (init-code), naming setup_b, in object
 * mode and with --kernel. */
#include "kstyle.h"
extern void ext(int);
int limit = 4;

static int __init setup_a(void)
{
    ext(1);
    return 0;
}

static int __init setup_b(void)
{
    ext(limit * 2);
    return 0;
}

typedef int (*initcall_t)(void);
static initcall_t __initcall_a __attribute__((used, section(".initcall6.init"))) = setup_a;
static initcall_t __initcall_b __attribute__((used, section(".initcall6.init"))) = setup_b;

int runtime(int x)
{
    return x < limit ? x : limit;
}
