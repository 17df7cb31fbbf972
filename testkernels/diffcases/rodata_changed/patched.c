const int prio_table[8] = { 0, 1, 2, 3, 4, 5, 7, 7 };
__attribute__((noinline)) int prio(int i) { return prio_table[i & 7]; }
