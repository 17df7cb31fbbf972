/* The changed function calls an unchanged static function and reads an
 * unchanged static variable: both become local references with the source
 * file for the loader. */
#include <stdint.h>

static uint64_t ticks;

__attribute__((noinline)) static uint64_t scale_ticks(uint64_t t)
{
    return t * 1000 / 3;
}

__attribute__((noinline)) uint64_t now_ns(void)
{
    return scale_ticks(ticks);
}

__attribute__((noinline)) void tick(void) { ticks++; }
