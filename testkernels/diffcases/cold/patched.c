/* The error path is split by gcc into `vm_exit.cold` (a child in
 * .text.unlikely); the fix changes the cold part: parent and child are
 * patched together. */
#include <stdio.h>
#include <stdlib.h>

int exits;
long exit_stats[64];

__attribute__((cold, noinline)) void report(const char *what, int reason)
{
    fprintf(stderr, "%s %d\n", what, reason);
}

int vm_exit(int reason, int len)
{
    exits++;
    if (__builtin_expect(reason >= 64 || len < 0, 0)) {
        report("unhandled VM exit reason, killing guest", reason);
        report("length", len);
        exit_stats[0]--;
        return -1;
    }
    for (int i = 0; i < len; i++)
        exit_stats[reason] += i;
    return reason * 2;
}

int other(int x) { return x + exits; }
