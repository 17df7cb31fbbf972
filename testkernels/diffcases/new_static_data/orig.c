/* The fix adds a static lookup table used by the changed function. */
#include <stdint.h>
__attribute__((noinline)) int cpuid_leaf_ok(uint32_t leaf)
{
    return leaf <= 0x1f;
}
int other_leaf(uint32_t l) { return l + 1; }
