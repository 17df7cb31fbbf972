/*
 * vmload: the workload of hotfix's migration-test guests (PID 1's child in a
 * busybox initramfs, see rc). It writes a monotonically increasing counter to
 * its console, one line "CTR <n>" every PERIOD milliseconds, so a test can
 * check that a migrated guest continued with no gap and no reset: the source
 * console ends at some n, the destination console continues at n+1.
 *
 * Optionally it dirties memory, to make a "busy" guest for benchmarks:
 *   wss=MB    size of the working set (allocated and touched once at start)
 *   rate=MB   megabytes of that set rewritten per second (one write per 4 KiB
 *             page, spread over the ticks); 0 = idle
 *   period=MS counter period (default 10)
 * Arguments are "key=value" words, e.g. `vmload wss=64 rate=200`.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long arg(int argc, char **argv, const char *key, long def)
{
    size_t n = strlen(key);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=')
            return strtol(argv[i] + n + 1, NULL, 10);
    return def;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long period_ms = arg(argc, argv, "period", 10);
    long wss_mb = arg(argc, argv, "wss", 0);
    long rate_mb = arg(argc, argv, "rate", 0);
    if (period_ms < 1)
        period_ms = 1;
    size_t pages = (size_t)wss_mb * 256;
    unsigned char *set = NULL;
    if (pages) {
        set = malloc(pages * 4096);
        if (!set) {
            fprintf(stderr, "vmload: cannot allocate %ld MB\n", wss_mb);
            return 1;
        }
        memset(set, 1, pages * 4096);
    }
    /* pages to dirty per tick */
    size_t per_tick = (size_t)rate_mb * 256 * (size_t)period_ms / 1000;
    size_t cursor = 0;
    char line[32];
    long long next = now_ns();
    for (unsigned long long ctr = 0;; ctr++) {
        int len = snprintf(line, sizeof line, "CTR %llu\n", ctr);
        if (write(1, line, (size_t)len) != len)
            return 1;
        for (size_t i = 0; set && i < per_tick; i++) {
            set[cursor * 4096] = (unsigned char)ctr;
            cursor = (cursor + 1) % pages;
        }
        next += period_ms * 1000000LL;
        long long wait = next - now_ns();
        if (wait > 0) {
            struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
            nanosleep(&ts, NULL);
        } else {
            next = now_ns(); /* fell behind: do not burst to catch up */
        }
    }
}
