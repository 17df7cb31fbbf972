/* New loop_a() and pair_b(), on different pages of the target: a switch,
 * which must refuse loop_a (its loop branches into its first bytes). */
int loop_a(int n) { return n > 1 ? n : 1; }
int pair_b(int x) { return (x << 2) + 2; }
