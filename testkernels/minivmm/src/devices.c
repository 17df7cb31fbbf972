/* devices.c: the device model: an MMIO block device with a DMA engine and
 * hot-unplug, and the PCI configuration ports.
 *
 * Locking: dev_lock serialises every device access (vCPU exits, unplug).
 * Lifetime: a blkdev is reference counted; the last blkdev_put poisons it
 * and moves it to a quarantine list (never returned to libc, so a stale
 * pointer reads poison instead of crashing, and the probe can see it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "minivmm.h"

pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER;
struct blkdev *blk;

#define BLK_REG_STATUS 0
#define BLK_REG_COUNT  1
#define BLK_REG_ELEM   2
#define BLK_REG_DOORBELL 3
#define BLK_MMIO_SIZE 0x1000

struct blkdev *blkdev_create(void)
{
	struct blkdev *d = calloc(1, sizeof(*d));
	if (!d)
		abort();
	d->refcount = 1;
	d->plugged = 1;
	d->irq_line = 11;
	d->dma_buf_size = 4096;
	d->dma_buf = calloc(1, d->dma_buf_size);
	d->magic = DEV_MAGIC;
	return d;
}

void blkdev_get(struct blkdev *d)
{
	__atomic_add_fetch(&d->refcount, 1, __ATOMIC_SEQ_CST);
}

void blkdev_put(struct blkdev *d)
{
	if (__atomic_sub_fetch(&d->refcount, 1, __ATOMIC_SEQ_CST) == 0) {
		/* poison and quarantine instead of free() */
		memset(d->regs, 0x6b, sizeof(d->regs));
		d->magic = DEV_POISON;
		d->plugged = 0;
	}
}

int blk_mmio_read(struct blkdev *d, uint32_t offset, uint64_t *val)
{
	if (offset >= BLK_MMIO_SIZE || (offset & 3))
		return -1;
	uint32_t idx = offset / 4;
	if (idx >= BLK_NR_REGS) {
		*val = 0xffffffff;      /* unimplemented registers read as ones */
		return 0;
	}
	*val = d->regs[idx];
	return 0;
}

/* A guest write to a device register. BUG: the register index is not
 * checked against BLK_NR_REGS, so offsets 0x40.. write past regs[]. */
int blk_mmio_write(struct blkdev *d, uint32_t offset, uint64_t val)
{
	if (offset >= BLK_MMIO_SIZE || (offset & 3))
		return -1;
	uint32_t idx = offset / 4;
	d->regs[idx] = (uint32_t)val;
	if (idx == BLK_REG_DOORBELL)
		return blk_dma_submit(d, d->regs[BLK_REG_COUNT], d->regs[BLK_REG_ELEM]);
	return 0;
}

/* Starts a DMA of COUNT elements of ELEM_SIZE bytes into the device buffer.
 * BUG: count * elem_size is computed in 32 bits and can wrap, so a huge
 * transfer passes the size check. Returns 0 when accepted. */
int blk_dma_submit(struct blkdev *d, uint32_t count, uint32_t elem_size)
{
	uint32_t len = count * elem_size;
	if (len > d->dma_buf_size) {
		d->regs[BLK_REG_STATUS] = 2;    /* error */
		return -1;
	}
	/* the emulated engine moves `len` bytes; the guest believes it asked
	 * for count * elem_size, which the device has just accepted */
	memset(d->dma_buf, 0xa5, len);
	d->regs[BLK_REG_STATUS] = 1;    /* done */
	return 0;
}

/* In-flight requests: each holds the device it was issued to. */
#define MAX_REQ 64
static struct blkdev *requests[MAX_REQ];

/* Issues a request to the current device; returns its tag or -1.
 * BUG: the request keeps a pointer without taking a reference. */
int blk_request_start(void)
{
	int tag = -1;
	pthread_mutex_lock(&dev_lock);
	for (int i = 0; i < MAX_REQ && blk; i++) {
		if (!requests[i]) {
			requests[i] = blk;
			tag = i;
			break;
		}
	}
	pthread_mutex_unlock(&dev_lock);
	return tag;
}

/* Completes request TAG: returns 0 if the device was alive, 1 if the
 * completion touched a freed device. */
int blk_request_complete(int tag)
{
	int stale = 0;
	if (tag < 0 || tag >= MAX_REQ)
		return -1;
	pthread_mutex_lock(&dev_lock);
	struct blkdev *d = requests[tag];
	requests[tag] = NULL;
	if (d) {
		stale = d->magic != DEV_MAGIC;
		d->regs[BLK_REG_STATUS] = 1;
	}
	pthread_mutex_unlock(&dev_lock);
	return stale;
}

/* Hot-unplug of the block device, then a fresh one is plugged. */
void blk_unplug(void)
{
	pthread_mutex_lock(&dev_lock);
	struct blkdev *old = blk;
	blk = blkdev_create();
	pthread_mutex_unlock(&dev_lock);
	if (old)
		blkdev_put(old);
}

/* PCI configuration mechanism #1. Device 31 is the host's management
 * controller: it exists on the host bus but must never be visible to a
 * guest. BUG: config reads are passed through for every device. */
static uint32_t pci_config_address;
#define MGMT_DEVFN (31 << 3)
#define MGMT_TOKEN 0x4d474d54u  /* "MGMT" */

int pio_in(uint16_t port, uint64_t *val)
{
	switch (port) {
	case 0xcf8:
		*val = pci_config_address;
		return 0;
	case 0xcfc: {
		uint32_t devfn = (pci_config_address >> 8) & 0xff;
		*val = devfn == MGMT_DEVFN ? MGMT_TOKEN : 0xffffffff;
		return 0;
	}
	case 0x3f8:
		*val = 0;
		return 0;
	default:
		*val = 0xff;
		return 0;
	}
}

int pio_out(uint16_t port, uint64_t val)
{
	switch (port) {
	case 0xcf8:
		pci_config_address = (uint32_t)val;
		return 0;
	case 0x3f8:
		return 0;       /* serial output: discarded */
	default:
		return 0;
	}
}
