/* a comment that changes nothing */
#include <stdint.h>

int add(int a, int b) { return a + b; }
static int twice(int x) { return add(x, x); }
int api(int x) { return twice(x) + 1; }
