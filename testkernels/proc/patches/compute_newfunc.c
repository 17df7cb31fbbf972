/* compute() using a new function and a new global variable of the patch. */
int patch_calls = 0;
__attribute__((noinline)) int patch_helper(int x) { return x * 3; }
int compute(int x) {
    patch_calls++;
    return patch_helper(x) + 7 + (patch_calls > 0 ? 0 : 1);
}
