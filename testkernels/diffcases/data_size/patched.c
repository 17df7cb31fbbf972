long slots[16];
__attribute__((noinline)) long slot(int i) { return slots[i & 7]; }
