/* Replacement for libcalc.so's lib_compute: x+200 (old: x+100). */
int lib_compute(int x) { return x + 200; }
