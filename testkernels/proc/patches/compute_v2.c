/* New compute(): x*3+7 (old: x*2+1). */
int compute(int x) { return x * 3 + 7; }
