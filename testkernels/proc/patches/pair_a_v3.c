/* New pair_a() alone: x*4+3 (a single site: a 5-byte jump). */
int pair_a(int x) { return (x << 2) + 3; }
