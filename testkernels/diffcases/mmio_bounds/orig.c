/* A virtual device's register write handler indexes its register file with
 * a guest-controlled offset and no bounds check. */
#include <stdint.h>

#define NREGS 16

struct vdev {
    uint32_t regs[NREGS];
    uint32_t irq_pending;
    void (*notify)(struct vdev *d);
};

static void vdev_notify(struct vdev *d)
{
    d->irq_pending |= 1;
}

__attribute__((noinline)) void vdev_reg_write(struct vdev *d, uint64_t addr, uint32_t val)
{
    uint32_t reg = (uint32_t)(addr >> 2);
    d->regs[reg] = val;
    if (reg == 0)
        d->notify(d);
}

void vdev_init(struct vdev *d)
{
    for (int i = 0; i < NREGS; i++)
        d->regs[i] = 0;
    d->notify = vdev_notify;
}

uint32_t vdev_reg_read(struct vdev *d, uint64_t addr)
{
    uint32_t reg = (uint32_t)(addr >> 2);
    return reg < NREGS ? d->regs[reg] : 0xffffffffu;
}
