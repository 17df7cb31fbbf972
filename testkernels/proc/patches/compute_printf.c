/* compute() calling an import (snprintf from libc, more than 2 GiB away). */
#include <stdio.h>
#include <stdlib.h>
int compute(int x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d", x * 3 + 7);
    return atoi(buf);
}
