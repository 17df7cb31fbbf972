/* compute() reading the main program's thread-local tls_val. */
extern __thread int tls_val;
int compute(int x) { return x + tls_val * 1000; }
