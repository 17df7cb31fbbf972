// SPDX-License-Identifier: GPL-2.0
/*
 * badwrite FILE: write(2) one byte to FILE from an unmapped user address
 * (page 0) and print the errno's name ("EFAULT" expected): the kernel's
 * exception table must turn the faulting user access into -EFAULT.
 * Built statically by the guest tests and put into the guest image.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const void *volatile bad = (const void *)8;
	int fd;
	ssize_t n;

	if (argc != 2) {
		fprintf(stderr, "usage: badwrite FILE\n");
		return 2;
	}
	fd = open(argv[1], O_WRONLY);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	n = write(fd, bad, 1);
	if (n >= 0) {
		printf("wrote %zd\n", n);
		return 1;
	}
	printf("%s\n", errno == EFAULT ? "EFAULT" : strerror(errno));
	return errno == EFAULT ? 0 : 1;
}
