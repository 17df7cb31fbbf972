/* target.c: the process-loader test target (also the demo and benchmark).
 *
 * A line-oriented server on stdin/stdout: each command line gets exactly one
 * reply line. Options start worker threads that exercise what the loader must
 * survive: hammer threads calling compute() and checking every result is
 * wholly the old or the new version, a thread stuck in stuck(), a thread in
 * sleepy() for a while, a clock_gettime (vDSO) spinner measuring the largest
 * gap between calls, threads blocked in futex/nanosleep/epoll_wait, and
 * real-time signal handlers counting every signal and its value.
 *
 * --regcheck moves the command loop to a thread and makes the main thread
 * (the one hotfix injects system calls into) loop in assembly with known
 * values in every general register, counting rounds whose registers or
 * flags changed under it ("regs" command).
 *
 * --pairs N starts threads calling pair_a() and pair_b(), two functions on
 * different pages that one patch replaces together, and counting the pairs
 * whose results come from different versions ("mixed").
 *
 *   target [--hammer N] [--pairs N] [--idle N] [--stuck] [--sleepy]
 *          [--spinner] [--blockers] [--victim] [--lib] [--regcheck]
 * Commands: call X | pair X | loop X | regs | lib X | tls N | scale X | status | pairs |
 *           resetpairs | gap | resetgap | sigs | unblock | wake | poke |
 *           tids | release | quit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define NOPATCH_INLINE __attribute__((noipa))

int lib_compute(int x) __attribute__((weak)); /* libcalc.so, when linked */

static volatile int g_one = 1;
static volatile int factor = 5;      /* static data the patches read */
__thread int tls_val;                /* TLS variable the patches read */
static atomic_long calls, bad, errors;
static atomic_long futex_wakes, epoll_events, sleeps;
static atomic_long rt_count, rt_sum, rt2_count, rt2_sum;
static atomic_int sleepy_done;
static atomic_long stuck_spins;
static atomic_long max_gap_ns;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int woken;
static int efd = -1;
static atomic_int spinner_tid, stuck_tid, victim_tid, in_handler;
static atomic_long victim_spins;
static int use_lib;
static sigset_t set; /* SIGRTMIN+1 */
static int serve(void);

/* The function the patches replace: old x*2+1, new x*3+7. */
NOPATCH_INLINE int compute(int x) { return x * 2 + g_one; }

/* Two functions on different pages (aligned 4096), patched together: old
 * x*4+1, new x*4+2. The first instruction reads g_one rip-relative. */
__attribute__((noipa, aligned(4096))) int pair_a(int x) { return g_one + (x << 2); }
__attribute__((noipa, aligned(4096))) int pair_b(int x) { return g_one + (x << 2); }
static atomic_long pair_calls, pair_mixed;

/* A function on its own page whose loop branches back into its first 6
 * bytes: a switch (6-byte entry jump) must refuse it. Returns max(n, 1). */
__asm__(".pushsection .text.loop_a,\"ax\",@progbits\n"
        ".p2align 12\n"
        ".globl loop_a\n"
        ".type loop_a,@function\n"
        "loop_a:\n"
        "  xor %eax,%eax\n"
        "1: add $1,%eax\n"
        "  cmp %edi,%eax\n"
        "  jl 1b\n"
        "  ret\n"
        ".size loop_a,.-loop_a\n"
        ".popsection\n");
int loop_a(int n);

/* A static function the patches call. */
static NOPATCH_INLINE int scale(int x) { return x * factor; }

/* Never returns: patching it must fail with "busy". */
NOPATCH_INLINE void stuck(void) {
    for (;;) {
        atomic_fetch_add(&stuck_spins, 1);
        __asm__ volatile("pause");
    }
}

/* On a stack until the "release" command, then never again. */
static atomic_int sleepy_release, sleepy_in;
NOPATCH_INLINE int sleepy(void) {
    atomic_store(&sleepy_in, 1);
    while (!atomic_load(&sleepy_release)) usleep(10000);
    atomic_store(&sleepy_done, 1);
    return 1;
}

/* Interrupted by SIGUSR1, whose handler never returns: victim() stays on
 * the stack below a signal frame. */
NOPATCH_INLINE void victim(void) {
    for (;;) atomic_fetch_add(&victim_spins, 1);
}

static void on_usr1(int sig) {
    (void)sig;
    atomic_store(&in_handler, 1);
    for (;;) pause();
}

static void *victim_main(void *arg) {
    (void)arg;
    atomic_store(&victim_tid, gettid());
    victim();
    return NULL;
}

static void *hammer_main(void *arg) {
    long seed = (long)arg;
    for (unsigned i = 0;; i++) {
        int x = (int)((seed * 7919 + i) & 0xffff);
        int r = compute(x);
        if (r != x * 2 + 1 && r != x * 3 + 7 && r != x * 5 + 3) {
            atomic_fetch_add(&bad, 1);
            fprintf(stderr, "BAD compute(%d) = %d\n", x, r);
            abort();
        }
        atomic_fetch_add(&calls, 1);
        if ((i & 1023) == 0) sched_yield();
    }
    return NULL;
}

static void *pair_main(void *arg) {
    long seed = (long)arg;
    for (unsigned i = 0;; i++) {
        int x = (int)((seed * 7919 + i) & 0xffff);
        int a = pair_a(x) - x * 4, b = pair_b(x) - x * 4;
        if ((a != 1 && a != 2) || (b != 1 && b != 2)) {
            atomic_fetch_add(&bad, 1);
            fprintf(stderr, "BAD pair(%d) = %d %d\n", x, a, b);
            abort();
        }
        if (a != b) atomic_fetch_add(&pair_mixed, 1);
        atomic_fetch_add(&pair_calls, 1);
        if ((i & 1023) == 0) sched_yield();
    }
    return NULL;
}

static atomic_long reg_rounds, reg_bad;

/* One round: known values in rbx..r15 (rcx and r11 included, which a
 * syscall clobbers), a pause loop counting rax down (flags live between
 * dec and jnz), then a check of everything. Returns 0 if all held. */
static long regcheck_round(void) {
    long bad;
    __asm__ volatile(
        "mov $0x1000001, %%rbx\n"
        "mov $0x1000002, %%rcx\n"
        "mov $0x1000003, %%rdx\n"
        "mov $0x1000004, %%rsi\n"
        "mov $0x1000005, %%rdi\n"
        "mov $0x1000006, %%r8\n"
        "mov $0x1000007, %%r9\n"
        "mov $0x1000008, %%r10\n"
        "mov $0x1000009, %%r11\n"
        "mov $0x100000a, %%r12\n"
        "mov $0x100000b, %%r13\n"
        "mov $0x100000c, %%r14\n"
        "mov $0x100000d, %%r15\n"
        "mov $20000, %%eax\n"
        "1: pause\n"
        "dec %%rax\n"
        "jnz 1b\n"
        "test %%rax, %%rax\n jnz 2f\n"
        "cmp $0x1000001, %%rbx\n jne 2f\n"
        "cmp $0x1000002, %%rcx\n jne 2f\n"
        "cmp $0x1000003, %%rdx\n jne 2f\n"
        "cmp $0x1000004, %%rsi\n jne 2f\n"
        "cmp $0x1000005, %%rdi\n jne 2f\n"
        "cmp $0x1000006, %%r8\n jne 2f\n"
        "cmp $0x1000007, %%r9\n jne 2f\n"
        "cmp $0x1000008, %%r10\n jne 2f\n"
        "cmp $0x1000009, %%r11\n jne 2f\n"
        "cmp $0x100000a, %%r12\n jne 2f\n"
        "cmp $0x100000b, %%r13\n jne 2f\n"
        "cmp $0x100000c, %%r14\n jne 2f\n"
        "cmp $0x100000d, %%r15\n jne 2f\n"
        "xor %%eax, %%eax\n jmp 3f\n"
        "2: mov $1, %%eax\n"
        "3:\n"
        : "=a"(bad)
        :
        : "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
          "r15", "cc", "memory");
    return bad;
}

static void *idle_main(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static void *stuck_main(void *arg) {
    (void)arg;
    atomic_store(&stuck_tid, gettid());
    stuck();
    return NULL;
}

static void *sleepy_main(void *arg) {
    (void)arg;
    sleepy();
    for (;;) pause();
    return NULL;
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *spinner_main(void *arg) {
    (void)arg;
    atomic_store(&spinner_tid, gettid());
    long prev = now_ns();
    for (;;) {
        long t = now_ns();
        long gap = t - prev;
        if (gap > atomic_load(&max_gap_ns)) atomic_store(&max_gap_ns, gap);
        prev = t;
    }
    return NULL;
}

static void *futex_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!woken) pthread_cond_wait(&cv, &mu);
        woken = 0;
        atomic_fetch_add(&futex_wakes, 1);
    }
    return NULL;
}

static void *sleep_main(void *arg) {
    (void)arg;
    for (;;) {
        long t0 = now_ns();
        struct timespec req = {0, 20 * 1000 * 1000}, rem;
        while (nanosleep(&req, &rem) == -1) {
            if (errno != EINTR) { atomic_fetch_add(&errors, 1); break; }
            atomic_fetch_add(&errors, 1); /* no signal is sent: EINTR is a bug */
            req = rem;
        }
        if (now_ns() - t0 < 20 * 1000 * 1000 - 1000) atomic_fetch_add(&errors, 1);
        atomic_fetch_add(&sleeps, 1);
    }
    return NULL;
}

static void *epoll_main(void *arg) {
    (void)arg;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = efd};
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    for (;;) {
        struct epoll_event out;
        int n = epoll_wait(ep, &out, 1, -1);
        if (n < 0) { atomic_fetch_add(&errors, 1); continue; }
        uint64_t v;
        if (read(efd, &v, 8) == 8) atomic_fetch_add(&epoll_events, (long)v);
    }
    return NULL;
}

static void on_rt(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    if (sig == SIGRTMIN) {
        atomic_fetch_add(&rt_count, 1);
        atomic_fetch_add(&rt_sum, si->si_value.sival_int);
    } else {
        atomic_fetch_add(&rt2_count, 1);
        atomic_fetch_add(&rt2_sum, si->si_value.sival_int);
    }
}

static int serve(void);
static void *serve_main(void *arg) {
    (void)arg;
    exit(serve());
    return NULL;
}

static void start(void *(*fn)(void *), void *arg) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 64 * 1024);
    if (pthread_create(&t, &a, fn, arg) != 0) { perror("pthread_create"); exit(1); }
}

int main(int argc, char **argv) {
    int hammer = 0, idle = 0, pairs = 0, regcheck = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* SIGRTMIN+1 stays blocked (pending) until "unblock"; every thread inherits the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_rt;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);
    sigaction(SIGRTMIN + 1, &sa, NULL);
    efd = eventfd(0, 0);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hammer") && i + 1 < argc) hammer = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--idle") && i + 1 < argc) idle = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pairs") && i + 1 < argc) pairs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--stuck")) start(stuck_main, NULL);
        else if (!strcmp(argv[i], "--sleepy")) start(sleepy_main, NULL);
        else if (!strcmp(argv[i], "--spinner")) start(spinner_main, NULL);
        else if (!strcmp(argv[i], "--victim")) {
            signal(SIGUSR1, on_usr1);
            start(victim_main, NULL);
        }
        else if (!strcmp(argv[i], "--blockers")) {
            start(futex_main, NULL);
            start(sleep_main, NULL);
            start(epoll_main, NULL);
        } else if (!strcmp(argv[i], "--lib")) use_lib = 1;
        else if (!strcmp(argv[i], "--regcheck")) regcheck = 1;
    }
    for (long i = 0; i < hammer; i++) start(hammer_main, (void *)i);
    for (long i = 0; i < idle; i++) start(idle_main, NULL);
    for (long i = 0; i < pairs; i++) start(pair_main, (void *)i);
    /* "ready" only once sleepy() is on its thread's stack. */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--sleepy"))
            while (!atomic_load(&sleepy_in)) usleep(1000);
    printf("ready %d\n", getpid());
    if (regcheck) {
        start(serve_main, NULL);
        for (;;) {
            if (regcheck_round()) atomic_fetch_add(&reg_bad, 1);
            atomic_fetch_add(&reg_rounds, 1);
        }
    }
    return serve();
}

static int serve(void) {
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        int x = 0;
        if (sscanf(line, "call %d", &x) == 1) printf("%d\n", compute(x));
        else if (!strncmp(line, "regs", 4))
            printf("reg_rounds=%ld reg_bad=%ld\n", atomic_load(&reg_rounds), atomic_load(&reg_bad));
        else if (sscanf(line, "loop %d", &x) == 1) printf("%d\n", loop_a(x));
        else if (sscanf(line, "pair %d", &x) == 1) printf("%d %d\n", pair_a(x), pair_b(x));
        else if (!strncmp(line, "pairs", 5))
            printf("pair_calls=%ld pair_mixed=%ld bad=%ld\n", atomic_load(&pair_calls),
                   atomic_load(&pair_mixed), atomic_load(&bad));
        else if (!strncmp(line, "resetpairs", 10)) { atomic_store(&pair_mixed, 0); printf("ok\n"); }
        else if (sscanf(line, "lib %d", &x) == 1) printf("%d\n", use_lib && lib_compute ? lib_compute(x) : -1);
        else if (sscanf(line, "tls %d", &x) == 1) { tls_val = x; printf("ok\n"); }
        else if (sscanf(line, "scale %d", &x) == 1) printf("%d\n", scale(x));
        else if (!strncmp(line, "status", 6))
            printf("calls=%ld bad=%ld errors=%ld futex=%ld epoll=%ld sleeps=%ld sleepy_done=%d stuck_spins=%ld\n",
                   atomic_load(&calls), atomic_load(&bad), atomic_load(&errors),
                   atomic_load(&futex_wakes), atomic_load(&epoll_events), atomic_load(&sleeps),
                   atomic_load(&sleepy_done), atomic_load(&stuck_spins));
        else if (!strncmp(line, "gap", 3)) printf("%ld\n", atomic_load(&max_gap_ns));
        else if (!strncmp(line, "resetgap", 8)) { atomic_store(&max_gap_ns, 0); printf("ok\n"); }
        else if (!strncmp(line, "sigs", 4))
            printf("rt=%ld sum=%ld rt2=%ld sum2=%ld\n", atomic_load(&rt_count), atomic_load(&rt_sum),
                   atomic_load(&rt2_count), atomic_load(&rt2_sum));
        else if (!strncmp(line, "unblock", 7)) {
            pthread_sigmask(SIG_UNBLOCK, &set, NULL);
            printf("ok\n");
        } else if (!strncmp(line, "wake", 4)) {
            pthread_mutex_lock(&mu);
            woken = 1;
            pthread_cond_signal(&cv);
            pthread_mutex_unlock(&mu);
            printf("ok\n");
        } else if (!strncmp(line, "poke", 4)) {
            uint64_t one = 1;
            printf("%s\n", write(efd, &one, 8) == 8 ? "ok" : "err");
        } else if (!strncmp(line, "tids", 4))
            printf("spinner=%d stuck=%d victim=%d in_handler=%d\n", atomic_load(&spinner_tid),
                   atomic_load(&stuck_tid), atomic_load(&victim_tid), atomic_load(&in_handler));
        else if (!strncmp(line, "release", 7)) { atomic_store(&sleepy_release, 1); printf("ok\n"); }
        else if (!strncmp(line, "quit", 4)) { printf("bye\n"); exit(0); }
        else printf("?\n");
    }
    return 0;
}
