/* control.c: the control socket and the guest-side probes.
 *
 * Protocol: one command per connection, one reply line:
 *   stats          -> "vcpus N exits E faults F"
 *   probe NAME     -> "VULNERABLE: ..." or "SAFE: ..."
 *   quit           -> "bye", then the VMM exits
 * Probes issue exits through vCPU 0's mailbox, so the exit is handled by a
 * vCPU thread through the same code path as the guest workload's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "minivmm.h"

extern pthread_mutex_t dev_lock;

/* Posts N exits to vCPU 0 and waits until its thread handled them, back to
 * back, as one guest instruction sequence. */
static void guest_exits(struct vm_exit *e, int n)
{
	struct vcpu *v = &vcpus[0];
	pthread_mutex_lock(&v->lock);
	memcpy(v->probe, e, n * sizeof(*e));
	v->probe_n = n;
	v->probe_pending = 1;
	while (v->probe_pending)
		pthread_cond_wait(&v->cond, &v->lock);
	memcpy(e, v->probe, n * sizeof(*e));
	pthread_mutex_unlock(&v->lock);
}

static struct vm_exit guest_exit(enum exit_kind kind, uint32_t index, uint64_t value)
{
	struct vm_exit e = { .kind = kind, .index = index, .value = value };
	guest_exits(&e, 1);
	return e;
}

const char *probe_run(const char *name, char *buf, size_t len)
{
	if (!strcmp(name, "xsa108")) {
		/* rdmsr 0x901: beyond the x2APIC range, past the APIC page */
		struct vm_exit e = guest_exit(EXIT_RDMSR, 0x901, 0);
		if (e.fault)
			snprintf(buf, len, "SAFE: rdmsr 0x901 raised #GP");
		else {
			char leak[9] = { 0 };
			memcpy(leak, &e.value, 8);
			snprintf(buf, len, "VULNERABLE: rdmsr 0x901 read past the APIC page: \"%s\"", leak);
		}
	} else if (!strcmp(name, "regwrite")) {
		uint32_t before = blk->irq_line;
		struct vm_exit e = guest_exit(EXIT_MMIO_WRITE, 0x40, 0x41414141);
		pthread_mutex_lock(&dev_lock);
		uint32_t after = blk->irq_line;
		blk->irq_line = before;         /* repair, for the next probe */
		pthread_mutex_unlock(&dev_lock);
		if (after != before)
			snprintf(buf, len, "VULNERABLE: MMIO write to register 16 overwrote irq_line (0x%x)", after);
		else
			snprintf(buf, len, "SAFE: MMIO write to register 16 %s", e.fault ? "refused" : "ignored");
	} else if (!strcmp(name, "dmaoverflow")) {
		/* 0x40000001 elements of 4 bytes: 4 GiB + 4 wraps to 4 */
		struct vm_exit e[3] = {
			{ .kind = EXIT_MMIO_WRITE, .index = 0x4, .value = 0x40000001 },
			{ .kind = EXIT_MMIO_WRITE, .index = 0x8, .value = 4 },
			{ .kind = EXIT_MMIO_WRITE, .index = 0xc, .value = 1 },
		};
		guest_exits(e, 3);
		if (!e[2].fault)
			snprintf(buf, len, "VULNERABLE: DMA of 0x40000001 x 4 bytes accepted into a 4096-byte buffer");
		else
			snprintf(buf, len, "SAFE: DMA of 0x40000001 x 4 bytes rejected");
	} else if (!strcmp(name, "uaf")) {
		int tag = blk_request_start();
		blk_unplug();
		int stale = blk_request_complete(tag);
		if (stale == 1)
			snprintf(buf, len, "VULNERABLE: request %d completed on a freed device", tag);
		else
			snprintf(buf, len, "SAFE: request %d completed on a live device", tag);
	} else if (!strcmp(name, "pcimgmt")) {
		struct vm_exit seq[2] = {
			{ .kind = EXIT_PIO_OUT, .index = 0xcf8, .value = 0x80000000u | (31u << 11) },
			{ .kind = EXIT_PIO_IN, .index = 0xcfc },
		};
		guest_exits(seq, 2);
		struct vm_exit e = seq[1];
		if (!e.fault && e.value == 0x4d474d54u)
			snprintf(buf, len, "VULNERABLE: guest read the management controller's config space");
		else
			snprintf(buf, len, "SAFE: management controller hidden (read 0x%llx%s)",
				 (unsigned long long)e.value, e.fault ? ", denied" : "");
	} else {
		snprintf(buf, len, "ERROR: unknown probe %s", name);
	}
	return buf;
}

static void stats(char *buf, size_t len)
{
	uint64_t exits = 0, faults = 0;
	for (int i = 0; i < nr_vcpus; i++) {
		exits += vcpus[i].exits;
		faults += vcpus[i].faults;
	}
	snprintf(buf, len, "vcpus %d exits %llu faults %llu", nr_vcpus,
		 (unsigned long long)exits, (unsigned long long)faults);
}

int control_serve(const char *path)
{
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (s < 0 || strlen(path) >= sizeof(addr.sun_path))
		return -1;
	strcpy(addr.sun_path, path);
	unlink(path);
	if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) || listen(s, 8))
		return -1;
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		char cmd[256] = { 0 }, reply[512];
		ssize_t n = read(c, cmd, sizeof(cmd) - 1);
		if (n <= 0) {
			close(c);
			continue;
		}
		cmd[strcspn(cmd, "\r\n")] = 0;
		int quit = 0;
		if (!strcmp(cmd, "stats"))
			stats(reply, sizeof(reply));
		else if (!strncmp(cmd, "probe ", 6))
			probe_run(cmd + 6, reply, sizeof(reply));
		else if (!strcmp(cmd, "quit")) {
			snprintf(reply, sizeof(reply), "bye");
			quit = 1;
		} else
			snprintf(reply, sizeof(reply), "ERROR: unknown command");
		dprintf(c, "%s\n", reply);
		close(c);
		if (quit)
			break;
	}
	close(s);
	unlink(path);
	return 0;
}
