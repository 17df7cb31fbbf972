#include <stdio.h>

__attribute__((noinline)) void trace(int line, const char *what)
{
    fprintf(stderr, "%d %s\n", line, what);
}

__attribute__((noinline)) int clamp_irq(int irq)
{
    if (irq < 0)
        return 0;
    if (irq > 223)
        return 223;
    return irq;
}

int route_irq(int irq)
{
    trace(__LINE__, "route");
    return clamp_irq(irq) + 32;
}
