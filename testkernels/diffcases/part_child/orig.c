/* gcc -O2 splits `work` by partial inlining: the cheap `if (!flag)` test is
 * inlined into the callers and the rest becomes `work.part.0`. The fix
 * changes the split part: `work` and `work.part.0` are patched together. */
extern void ext(int);
extern int flag;

int work(int *p)
{
    if (!flag)
        return 0;
    for (int i = 0; i < 100; i++) {
        ext(p[i]);
        ext(p[i] * 2);
        ext(p[i] * 3);
        ext(p[i] + 7);
        if (p[i] > 50)
            ext(i);
    }
    ext(1);
    ext(2);
    ext(3);
    return 1;
}

int c1(int *p) { return work(p) + 1; }
int c2(int *p) { return work(p + 1) + 2; }
int c3(int *p) { return work(p + 2) + 3; }
