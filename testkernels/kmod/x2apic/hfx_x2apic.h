/* SPDX-License-Identifier: GPL-2.0 */
/* State of the modelled vCPU, shared with hand-written livepatches. */
#ifndef HFX_X2APIC_H
#define HFX_X2APIC_H
#include <linux/types.h>

#define APIC_BASE_MSR 0x800

/* The virtual local APIC of one vCPU: the 4 KiB register page (256 16-byte
 * aligned registers collapsed to u32 here), then hypervisor-private state. */
struct vlapic {
	u32 regs[256];
	u32 private_state[768];
};

struct vcpu {
	int id;
	struct vlapic apic;
	u32 last_msr;
	int last_rc;
	u64 last_val;
	unsigned long msr_reads;
};

#endif
