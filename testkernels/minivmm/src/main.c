/* main.c: minivmm entry point: `minivmm [-n VCPUS] SOCKET` starts the vCPU
 * threads and serves the control socket until `quit`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "minivmm.h"

int main(int argc, char **argv)
{
	int n = NR_VCPUS_DEFAULT, opt;
	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt == 'n')
			n = atoi(optarg);
		else
			goto usage;
	}
	if (optind != argc - 1 || n < 1 || n > 1024)
		goto usage;
	blk = blkdev_create();
	nr_vcpus = n;
	vcpus = calloc(n, sizeof(*vcpus));
	for (int i = 0; i < n; i++) {
		vcpus[i].id = i;
		vcpus[i].apic = lapic_create();
		pthread_mutex_init(&vcpus[i].lock, NULL);
		pthread_cond_init(&vcpus[i].cond, NULL);
		pthread_create(&vcpus[i].thread, NULL, vcpu_thread, &vcpus[i]);
	}
	printf("minivmm: pid %d, %d vCPUs running, control socket %s\n", getpid(), n, argv[optind]);
	fflush(stdout);
	int rc = control_serve(argv[optind]);
	vm_running = 0;
	for (int i = 0; i < n; i++)
		pthread_join(vcpus[i].thread, NULL);
	return rc ? 1 : 0;
usage:
	fprintf(stderr, "usage: minivmm [-n VCPUS] SOCKET\n");
	return 2;
}
