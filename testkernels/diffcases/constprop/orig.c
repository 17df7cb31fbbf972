/* gcc clones `scale` for the constant argument (scale.constprop.0); the fix
 * changes the clone. Suffix numbers are ignored when correlating. */
static __attribute__((noinline)) int scale(int x, int k)
{
    int r = 0;
    for (int i = 0; i < k; i++)
        r += x * i + (x >> i);
    return r;
}

int scale_a(int x) { return scale(x, 7) + 1; }
int scale_b(int x) { return scale(x + 1, 7) - 1; }
