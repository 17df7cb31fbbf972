#include <stdio.h>

__attribute__((noinline)) void hello(void)
{
    puts("hello, world");
}

__attribute__((noinline)) void bye(void)
{
    puts("bye");
}
