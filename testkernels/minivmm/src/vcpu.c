/* vcpu.c: vCPU threads and the exit dispatcher.
 *
 * Each vCPU runs a scripted guest workload forever: every iteration takes a
 * handful of exits (TSC-deadline and TPR MSRs, serial port output, block
 * device MMIO), the way a guest's timer and I/O paths do. Between
 * iterations it serves its probe mailbox.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "minivmm.h"

struct vcpu *vcpus;
int nr_vcpus;
volatile int vm_running = 1;
extern pthread_mutex_t dev_lock;

void vcpu_handle_exit(struct vcpu *v, struct vm_exit *e)
{
	int rc = 0;
	v->exits++;
	switch (e->kind) {
	case EXIT_RDMSR:
		rc = lapic_msr_read(v->apic, e->index, &e->value);
		break;
	case EXIT_WRMSR:
		rc = lapic_msr_write(v->apic, e->index, e->value);
		break;
	case EXIT_PIO_IN:
		rc = pio_in((uint16_t)e->index, &e->value);
		break;
	case EXIT_PIO_OUT:
		rc = pio_out((uint16_t)e->index, e->value);
		break;
	case EXIT_MMIO_READ:
		pthread_mutex_lock(&dev_lock);
		rc = blk_mmio_read(blk, e->index, &e->value);
		pthread_mutex_unlock(&dev_lock);
		break;
	case EXIT_MMIO_WRITE:
		pthread_mutex_lock(&dev_lock);
		rc = blk_mmio_write(blk, e->index, e->value);
		pthread_mutex_unlock(&dev_lock);
		break;
	}
	e->fault = rc != 0;
	if (e->fault)
		v->faults++;
}

static void guest_step(struct vcpu *v, uint64_t iter)
{
	struct vm_exit e;
	e = (struct vm_exit){ .kind = EXIT_WRMSR, .index = 0x6E0, .value = iter * 1000 };
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_RDMSR, .index = 0x6E0 };
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_WRMSR, .index = 0x808, .value = iter & 0xf }; /* TPR */
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_RDMSR, .index = 0x802 };  /* APIC ID */
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_PIO_OUT, .index = 0x3f8, .value = 'a' + iter % 26 };
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_MMIO_WRITE, .index = 0x4, .value = 8 };   /* COUNT */
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_MMIO_WRITE, .index = 0x8, .value = 64 };  /* ELEM */
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_MMIO_WRITE, .index = 0xc, .value = 1 };   /* DOORBELL */
	vcpu_handle_exit(v, &e);
	e = (struct vm_exit){ .kind = EXIT_MMIO_READ, .index = 0x0 };
	vcpu_handle_exit(v, &e);
}

void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct timespec pause = { 0, 200000 };  /* 0.2 ms of "guest time" */
	for (uint64_t iter = 0; vm_running; iter++) {
		guest_step(v, iter);
		pthread_mutex_lock(&v->lock);
		if (v->probe_pending) {
			for (int i = 0; i < v->probe_n; i++)
				vcpu_handle_exit(v, &v->probe[i]);
			v->probe_pending = 0;
			pthread_cond_broadcast(&v->cond);
		}
		pthread_mutex_unlock(&v->lock);
		nanosleep(&pause, NULL);
	}
	return NULL;
}
