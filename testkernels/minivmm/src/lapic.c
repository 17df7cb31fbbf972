/* lapic.c: local APIC emulation, x2APIC MSR interface.
 *
 * x2APIC maps APIC register at MMIO offset R to MSR 0x800 + (R >> 4); the
 * architectural range is 0x800-0x8FF, i.e. exactly one 4 KiB register page.
 * The shipped code accepts 0x800-0xBFF (the XSA-108 bug class): MSRs above
 * 0x8FF read memory past the end of the register page. In this VMM the
 * allocation after the page belongs to another guest: the probe reads its
 * "secret".
 */
#include <stdlib.h>
#include <string.h>
#include "minivmm.h"

#define X2APIC_MSR_BASE 0x800
#define X2APIC_MSR_END  0xBFF   /* BUG: must be 0x8FF */
#define MSR_TSC_DEADLINE 0x6E0

/* The APIC page and, right after it, memory the guest must never see. */
struct lapic_block {
	struct lapic apic;
	char other_guest[3 * APIC_PAGE_SIZE];
};

struct lapic *lapic_create(void)
{
	struct lapic_block *b = calloc(1, sizeof(*b));
	if (!b)
		abort();
	/* APIC ID register (offset 0x20) and version (0x30) */
	b->apic.regs[0x20] = 0;
	b->apic.regs[0x30] = 0x14;
	/* 0x1010 bytes past the page start: what rdmsr 0x901 reaches */
	strcpy(b->other_guest + 8, "SECRET-KEY-OF-VM-7");
	return &b->apic;
}

static int x2apic_msr_in_range(uint32_t msr)
{
	return msr >= X2APIC_MSR_BASE && msr <= X2APIC_MSR_END;
}

int lapic_msr_read(struct lapic *apic, uint32_t msr, uint64_t *val)
{
	if (msr == MSR_TSC_DEADLINE) {
		*val = apic->tsc_deadline;
		return 0;
	}
	if (!x2apic_msr_in_range(msr))
		return -1;      /* #GP */
	uint32_t offset = (msr - X2APIC_MSR_BASE) << 4;
	uint64_t v;
	memcpy(&v, &apic->regs[offset], sizeof(v));
	*val = v;
	return 0;
}

int lapic_msr_write(struct lapic *apic, uint32_t msr, uint64_t val)
{
	if (msr == MSR_TSC_DEADLINE) {
		apic->tsc_deadline = val;
		return 0;
	}
	if (!x2apic_msr_in_range(msr))
		return -1;
	uint32_t offset = (msr - X2APIC_MSR_BASE) << 4;
	if (offset == 0x20 || offset == 0x30)
		return -1;      /* read-only: APIC ID, version */
	if (offset + sizeof(uint32_t) > APIC_PAGE_SIZE)
		return -1;
	uint32_t v32 = (uint32_t)val;
	memcpy(&apic->regs[offset], &v32, sizeof(v32));
	return 0;
}
