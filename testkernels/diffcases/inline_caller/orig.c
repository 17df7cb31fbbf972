/* `checksum` is inlined into both callers; the fix changes it, so both
 * callers change (and `checksum` itself has no out-of-line copy). */
#include <stdint.h>

static inline __attribute__((always_inline)) uint32_t checksum(const uint8_t *p, int n)
{
    uint32_t s = 0;
    for (int i = 0; i < n; i++)
        s += p[i];
    return s;
}

uint32_t pkt_sum(const uint8_t *p) { return checksum(p, 64); }
uint32_t hdr_sum(const uint8_t *p) { return checksum(p, 20) ^ 0xffff; }
int unrelated(int x) { return x - 1; }
