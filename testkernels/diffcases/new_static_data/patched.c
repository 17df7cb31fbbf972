/* The fix adds a static lookup table used by the changed function. */
#include <stdint.h>
static volatile uint8_t leaf_allowed[0x20] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1 };
static int denied;
__attribute__((noinline)) int cpuid_leaf_ok(uint32_t leaf)
{
    if (leaf > 0x1f || !leaf_allowed[leaf]) {
        denied++;
        return 0;
    }
    return 1;
}
int other_leaf(uint32_t l) { return l + 1; }
