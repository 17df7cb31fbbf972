/* demo.c: the program scripts/demo patches live.
 *
 * Eight worker threads keep calling clamp_percent(), which has a bug: values
 * above 100 are not clamped. Every 250 ms the main thread prints what
 * clamp_percent(150) returns and how many calls the workers have made; the
 * call count keeps growing while the function is patched and reverted. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static atomic_long calls;

__attribute__((noipa)) int clamp_percent(int v) {
    if (v < 0)
        return 0;
    return v; /* BUG: no upper bound */
}

static void *worker(void *arg) {
    unsigned x = (unsigned)(long)arg;
    for (;;) {
        x = x * 1103515245u + 12345u;
        int v = (int)(x % 300) - 50;
        int r = clamp_percent(v);
        if (r < 0 || (r != v && r != 100 && r != 0)) {
            fprintf(stderr, "impossible result %d for %d\n", r, v);
            return NULL;
        }
        atomic_fetch_add(&calls, 1);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t[8];
    for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        usleep(250000);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double s = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
        printf("t=%5.2fs  clamp_percent(150) = %3d   worker calls so far: %ld\n", s,
               clamp_percent(150), atomic_load(&calls));
    }
}
