__attribute__((noinline)) int next_id(void)
{
    static int last;
    return ++last;
}

__attribute__((noinline)) int peek(int x) { return x + 1; }
