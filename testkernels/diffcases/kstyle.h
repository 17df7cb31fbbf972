/* Kernel-style statics and sections for the diff cases, compiled in user
 * space: the shapes of include/linux/dynamic_debug.h (a __UNIQUE_ID_ddebugN
 * descriptor per pr_debug, in __dyndbg), include/asm-generic/bug.h (WARN_ONCE's
 * __warned in .data.once), lockdep's __key, ratelimit's _rs, __func__, and
 * the section attributes __init/__exit/__sched. */
#ifndef KSTYLE_H
#define KSTYLE_H
struct _ddebug {
    const char *modname, *function, *filename, *format;
    unsigned int lineno : 18;
    unsigned int flags : 8;
};
extern void __dynamic_pr_debug(struct _ddebug *d, const char *fmt, ...);
#define ___PASTE(a, b) a##b
#define __PASTE(a, b) ___PASTE(a, b)
#define __UNIQUE_ID(p) __PASTE(__PASTE(__UNIQUE_ID_, p), __COUNTER__)
#define __dynamic_pr_debug_id(id, fmt, ...)                                      \
    do {                                                                         \
        static struct _ddebug __attribute__((section("__dyndbg"), aligned(8))) id = { \
            "mod", __func__, __FILE__, fmt, __LINE__, 0};                        \
        if (__builtin_expect(id.flags & 1, 0))                                   \
            __dynamic_pr_debug(&id, fmt, ##__VA_ARGS__);                         \
    } while (0)
#define pr_debug(fmt, ...) __dynamic_pr_debug_id(__UNIQUE_ID(ddebug), fmt, ##__VA_ARGS__)

extern void warn_printk(const char *fmt, ...);
#define WARN_ONCE(cond, fmt)                                                     \
    ({                                                                           \
        static _Bool __attribute__((section(".data.once"))) __warned;            \
        int __ret = !!(cond);                                                    \
        if (__builtin_expect(__ret && !__warned, 0)) {                           \
            __warned = 1;                                                        \
            warn_printk(fmt);                                                    \
        }                                                                        \
        __builtin_expect(__ret, 0);                                              \
    })

struct lock_class_key { char dummy[8]; };
struct lock { int v; };
extern void __lock_init(struct lock *l, const char *name, struct lock_class_key *k);
#define lock_init(l)                                                             \
    do {                                                                         \
        static struct lock_class_key __key;                                      \
        __lock_init((l), #l, &__key);                                            \
    } while (0)

struct ratelimit_state { int interval, burst, printed, missed; };
extern int ___ratelimit(struct ratelimit_state *rs, const char *func);
#define printk_ratelimit_here()                                                  \
    ({                                                                           \
        static struct ratelimit_state _rs = {5 * 100, 10, 0, 0};                 \
        ___ratelimit(&_rs, __func__);                                            \
    })

#define __init __attribute__((section(".init.text"), noinline))
#define __exit __attribute__((section(".exit.text"), noinline))
#define __sched __attribute__((section(".sched.text")))
#define __percpu_var __attribute__((section(".data..percpu")))
#endif
