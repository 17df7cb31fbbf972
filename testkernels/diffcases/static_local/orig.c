/* Two functions each own a `static int counter`. The fix gives a later
 * function its own `static int counter` too, so gcc renumbers them
 * (orig: tick_a's is counter.1, patched: counter.2), and also changes
 * tick_a. The statics correlate through the functions that use them, and
 * tick_a's reference names the ORIGINAL counter.1. */
__attribute__((noinline)) int tick_a(int x)
{
    static int counter;
    counter += x;
    return counter;
}

__attribute__((noinline)) int tick_b(int x)
{
    static int counter;
    counter -= x;
    return counter;
}

__attribute__((noinline)) int audit(int x)
{
    int r = 0;
    for (int i = 0; i < x; i++)
        r += i * i;
    return r;
}
