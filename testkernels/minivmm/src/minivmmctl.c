/* minivmmctl: `minivmmctl SOCKET COMMAND...` sends one command to a
 * minivmm control socket and prints the reply line. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: minivmmctl SOCKET COMMAND...\n");
		return 2;
	}
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0 || strlen(argv[1]) >= sizeof(addr.sun_path))
		return 1;
	strcpy(addr.sun_path, argv[1]);
	if (connect(s, (struct sockaddr *)&addr, sizeof(addr))) {
		perror(argv[1]);
		return 1;
	}
	char cmd[256] = { 0 };
	for (int i = 2; i < argc; i++) {
		strncat(cmd, argv[i], sizeof(cmd) - strlen(cmd) - 2);
		if (i + 1 < argc)
			strncat(cmd, " ", sizeof(cmd) - strlen(cmd) - 1);
	}
	strncat(cmd, "\n", sizeof(cmd) - strlen(cmd) - 1);
	if (write(s, cmd, strlen(cmd)) < 0)
		return 1;
	char buf[1024];
	ssize_t n;
	while ((n = read(s, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, n, stdout);
	return 0;
}
