__attribute__((noinline)) int next_id(void)
{
    extern int global_id;
    return ++global_id;
}

__attribute__((noinline)) int peek(int x) { return x + 1; }
