/* The fix changes one message and adds another. Both functions use the
 * literal "see the log", which gcc emits once, in report_error's string
 * section: in the patched object it moves (new offset, new .LC label) but
 * report_status still refers to the same string, so only report_error
 * changes. */
#include <stdio.h>

__attribute__((noinline)) void report_error(int code)
{
    printf("device error code=%d (fatal)\n", code);
    puts("resetting device");
    puts("see the log");
}

__attribute__((noinline)) void report_status(int s)
{
    printf("status %d\n", s);
    puts("see the log");
    puts("status done");
}
