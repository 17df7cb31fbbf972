/* compute() calling the target's static scale() and reading its static factor. */
extern int scale(int x);
extern int factor;
int compute(int x) { return scale(x) + factor * 1000; }
