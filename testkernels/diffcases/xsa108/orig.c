/* XSA-108: the x2APIC MSR range 0x800-0xBFF lets a guest read past the
 * 4 KiB APIC register page. The fix narrows it to 0x800-0x8FF. */
#include <stdint.h>
#include <errno.h>

struct vlapic {
    uint32_t regs[1024];
    int hw_enabled;
};

struct vcpu {
    int id;
    struct vlapic *apic;
    uint64_t tsc_aux;
};

uint64_t msr_reads;

__attribute__((noinline)) int vlapic_msr_read(struct vlapic *v, uint32_t msr, uint64_t *val)
{
    if (!v->hw_enabled)
        return -ENODEV;
    if (msr < 0x800 || msr > 0xbff)
        return -EINVAL;
    uint32_t off = (msr - 0x800) << 4;
    *val = *(uint32_t *)((char *)v->regs + off);
    return 0;
}

int hvm_msr_read(struct vcpu *vc, uint32_t msr, uint64_t *val)
{
    msr_reads++;
    switch (msr) {
    case 0xc0000103:
        *val = vc->tsc_aux;
        return 0;
    default:
        return vlapic_msr_read(vc->apic, msr, val);
    }
}
