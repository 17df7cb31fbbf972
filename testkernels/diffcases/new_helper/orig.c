/* A virtio-like descriptor handler trusts the guest's length. The fix adds
 * a validating helper and a global counter of rejected descriptors. */
#include <stdint.h>
#include <string.h>

struct desc { uint64_t addr; uint32_t len; uint16_t flags; };

static uint8_t ring_buf[4096];
uint64_t processed;

extern void *guest_map(uint64_t gpa, uint32_t len);

int handle_desc(const struct desc *d)
{
    void *p = guest_map(d->addr, d->len);
    if (!p)
        return -1;
    memcpy(ring_buf, p, d->len);
    processed++;
    return 0;
}

int ring_peek(unsigned i)
{
    return ring_buf[i & 4095];
}
