/* minivmm: a small VMM-shaped program used as a live-patching target.
 *
 * Model: NR_VCPUS threads each run a scripted "guest" that takes exits
 * (MSR reads/writes, port I/O, MMIO) handled by the device model, as a real
 * VMM's vCPU threads do. A control thread serves a unix socket: `stats`,
 * `probe NAME` (runs a guest-side exploit attempt on vCPU 0 through the same
 * exit path), `quit`. Each probe prints one line that starts with
 * "VULNERABLE" or "SAFE".
 */
#ifndef MINIVMM_H
#define MINIVMM_H
#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

#define NR_VCPUS_DEFAULT 4
#define APIC_PAGE_SIZE 4096

enum exit_kind { EXIT_RDMSR, EXIT_WRMSR, EXIT_PIO_IN, EXIT_PIO_OUT, EXIT_MMIO_READ, EXIT_MMIO_WRITE };

/* One vCPU exit, as decoded from the guest. */
struct vm_exit {
	enum exit_kind kind;
	uint32_t index;     /* MSR number, port, or MMIO offset */
	uint64_t value;     /* value written, or result of a read */
	int fault;          /* set by the handler: #GP / access denied */
};

/* Local APIC state: one 4 KiB register page, as in hardware. */
struct lapic {
	uint8_t regs[APIC_PAGE_SIZE];
	uint64_t tsc_deadline;
};

struct vcpu {
	int id;
	pthread_t thread;
	struct lapic *apic;
	uint64_t exits;
	uint64_t faults;
	/* probe mailbox: the control thread posts up to 4 exits, the vCPU runs
	 * them back to back between two steps of its own workload */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int probe_pending;
	int probe_n;
	struct vm_exit probe[4];
};

/* The emulated block device: registers reached through MMIO. */
#define BLK_NR_REGS 16
struct blkdev {
	int refcount;
	int plugged;
	uint32_t regs[BLK_NR_REGS];
	uint32_t irq_line;         /* lies right after regs: an overflow hits it */
	uint8_t *dma_buf;
	uint32_t dma_buf_size;
	uint64_t magic;            /* DEV_MAGIC while alive, poisoned when freed */
};
#define DEV_MAGIC 0xdeadbeefcafef00dULL
#define DEV_POISON 0x6b6b6b6b6b6b6b6bULL

/* vcpu.c */
void vcpu_handle_exit(struct vcpu *v, struct vm_exit *e);
extern struct vcpu *vcpus;
extern int nr_vcpus;
extern volatile int vm_running;
void *vcpu_thread(void *arg);

/* lapic.c */
struct lapic *lapic_create(void);
int lapic_msr_read(struct lapic *apic, uint32_t msr, uint64_t *val);
int lapic_msr_write(struct lapic *apic, uint32_t msr, uint64_t val);

/* devices.c */
extern struct blkdev *blk;
struct blkdev *blkdev_create(void);
void blkdev_get(struct blkdev *d);
void blkdev_put(struct blkdev *d);
int blk_mmio_read(struct blkdev *d, uint32_t offset, uint64_t *val);
int blk_mmio_write(struct blkdev *d, uint32_t offset, uint64_t val);
int blk_dma_submit(struct blkdev *d, uint32_t count, uint32_t elem_size);
int blk_request_start(void);
int blk_request_complete(int tag);
void blk_unplug(void);
int pio_in(uint16_t port, uint64_t *val);
int pio_out(uint16_t port, uint64_t val);

/* control.c */
int control_serve(const char *path);
const char *probe_run(const char *name, char *buf, size_t len);

#endif
