/* A kernel object with code in .init.text, .exit.text and
 * .static_call.text (two static-call trampolines, as
 * ARCH_DEFINE_STATIC_CALL_TRAMP emits them) beside an ordinary function.
 * The fix changes dispatch only: `hotfix diff --kernel` carries exactly
 * dispatch, which calls the trampoline through a reference. */
#include "kstyle.h"
extern void ext(int);
extern void __SCT__tp_a(int);

void tp_a_default(int x) { ext(x); }
void tp_b_default(int x) { ext(-x); }

asm(".pushsection .static_call.text, \"ax\"\n"
    ".globl __SCT__tp_a\n.type __SCT__tp_a, @function\n.align 4\n"
    "__SCT__tp_a:\n  jmp tp_a_default\n  int3\n.size __SCT__tp_a, . - __SCT__tp_a\n"
    ".globl __SCT__tp_b\n.type __SCT__tp_b, @function\n.align 4\n"
    "__SCT__tp_b:\n  jmp tp_b_default\n  int3\n.size __SCT__tp_b, . - __SCT__tp_b\n"
    ".popsection\n");

static int __init mod_init(void)
{
    ext(10);
    return 0;
}

static int __init mod_init_late(void)
{
    ext(11);
    return 0;
}

static void __exit mod_exit(void)
{
    ext(12);
}

typedef int (*initcall_t)(void);
static initcall_t __init_a __attribute__((used, section(".initcall6.init"))) = mod_init;
static initcall_t __init_b __attribute__((used, section(".initcall7.init"))) = mod_init_late;
static void (*__exitcall)(void) __attribute__((used, section(".exitcall.exit"))) = mod_exit;

int dispatch(int x)
{
    if (x >= 16)
        return -1;
    __SCT__tp_a(x);
    return 0;
}
