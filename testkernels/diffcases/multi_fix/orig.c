/* Two independent fixes in one object, plus an untouched function. */
__attribute__((noinline)) int div_safe(int a, int b) { return a / b; }
__attribute__((noinline)) int mod_safe(int a, int b) { return a % b; }
__attribute__((noinline)) int mul(int a, int b) { return a * b; }
