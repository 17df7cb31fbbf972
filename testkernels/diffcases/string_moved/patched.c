/* The fix changes one message; the other function's literals get new
 * labels and offsets but are the same strings: only `report_error` changes. */
#include <stdio.h>

__attribute__((noinline)) void report_error(int code)
{
    printf("device error code=%d (fatal)\n", code);
    puts("resetting device");
}

__attribute__((noinline)) void report_status(int s)
{
    printf("status %d\n", s);
    puts("status done");
}
