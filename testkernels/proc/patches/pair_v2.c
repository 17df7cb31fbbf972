/* New pair_a() and pair_b(): x*4+2 (old: x*4+1). They sit on different
 * pages of the target, so the loader switches them through slots. */
int pair_a(int x) { return (x << 2) + 2; }
int pair_b(int x) { return (x << 2) + 2; }
