/* libcalc.c: a shared library of the test target; the patch replaces lib_compute. */
static volatile int lib_base = 100;
__attribute__((noipa)) int lib_compute(int x) { return x + lib_base; }
