/* A second patch stacked on compute_v2: x*5+3. */
int compute(int x) { return x * 5 + 3; }
