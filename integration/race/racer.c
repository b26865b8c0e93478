// racer: the TOCTOU attack on a supervisor that checks a pointer argument
// and then lets the call continue. One thread keeps rewriting a buffer
// between an allowed value and a forbidden one while another thread makes
// the call with that buffer; the racer counts the calls that reached the
// forbidden object.
//
//   racer open ALLOWED N     paths of equal length; counts opens whose
//                            fd is FORBIDDEN's inode
//   racer connect ALLOWED N  127.0.0.1:PORT forms; counts connections
//                            made to FORBIDDEN's port
//
// FORBIDDEN comes from the environment (RACER_FORBIDDEN), so that it does
// not appear on the command line, which kfv-run admits as the VM's own.
//
// It prints one line: "attempts=N allowed=A forbidden=F denied=D" and
// exits 0. Test-only: built by the kfv integration tests.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char buf[256];
static char alt[2][256];
static size_t len;
static atomic_int stop;

static void *swapper(void *arg) {
	(void)arg;
	for (unsigned i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++)
		memcpy(buf, alt[i & 1], len);
	return NULL;
}

static int parse_addr(const char *s, struct sockaddr_in *sa) {
	char host[64];
	const char *c = strrchr(s, ':');
	if (!c || (size_t)(c - s) >= sizeof host)
		return -1;
	memcpy(host, s, c - s);
	host[c - s] = 0;
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_port = htons(atoi(c + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
	const char *forb = getenv("RACER_FORBIDDEN");
	if (argc != 4 || !forb) {
		fprintf(stderr, "usage: RACER_FORBIDDEN=F racer open|connect ALLOWED N\n");
		return 2;
	}
	int mode_open = strcmp(argv[1], "open") == 0;
	long n = atol(argv[3]);
	long allowed = 0, forbidden = 0, denied = 0;
	struct stat fst;
	struct sockaddr_in sa[2];

	if (mode_open) {
		len = strlen(argv[2]) + 1;
		if (len != strlen(forb) + 1 || len > sizeof buf) {
			fprintf(stderr, "racer: paths must have the same length\n");
			return 2;
		}
		memcpy(alt[0], argv[2], len);
		memcpy(alt[1], forb, len);
		if (stat(forb, &fst) != 0) {
			perror("racer: stat forbidden");
			return 2;
		}
	} else {
		if (parse_addr(argv[2], &sa[0]) || parse_addr(forb, &sa[1])) {
			fprintf(stderr, "racer: addresses are 127.0.0.1:PORT\n");
			return 2;
		}
		len = sizeof sa[0];
		memcpy(alt[0], &sa[0], len);
		memcpy(alt[1], &sa[1], len);
	}
	memcpy(buf, alt[0], len);

	pthread_t th;
	if (pthread_create(&th, NULL, swapper, NULL) != 0) {
		perror("racer: pthread_create");
		return 2;
	}
	for (long i = 0; i < n; i++) {
		if (mode_open) {
			int fd = openat(AT_FDCWD, buf, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				denied++;
				continue;
			}
			struct stat st;
			if (fstat(fd, &st) == 0 && st.st_ino == fst.st_ino && st.st_dev == fst.st_dev)
				forbidden++;
			else
				allowed++;
			close(fd);
		} else {
			int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (s < 0) {
				perror("racer: socket");
				return 2;
			}
			if (connect(s, (struct sockaddr *)buf, sizeof(struct sockaddr_in)) != 0) {
				denied++;
			} else {
				struct sockaddr_in peer;
				socklen_t pl = sizeof peer;
				if (getpeername(s, (struct sockaddr *)&peer, &pl) == 0 && peer.sin_port == sa[1].sin_port)
					forbidden++;
				else
					allowed++;
				// Reset instead of FIN: no TIME_WAIT, so 100k attempts do
				// not run out of ephemeral ports.
				struct linger lg = {1, 0};
				setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			}
			close(s);
		}
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	printf("attempts=%ld allowed=%ld forbidden=%ld denied=%ld\n", n, allowed, forbidden, denied);
	return 0;
}
