// target: the program kfv's benchmark runs under a seccomp filter that
// notifies getppid, either under kfv-run or under the C floor supervisor.
// It times its own calls with CLOCK_MONOTONIC (vDSO: no syscall, so no
// notification) and prints one "KFVB" line per measurement.
//
//   target rtt CALLS CPU
//       CALLS getppid calls one after the other, each timed; CPU >= 0 pins
//       the process to that CPU first. Prints
//       KFVB rtt calls=N mean_ns= p50_ns= p99_ns= fails= errno=
//   target open PATH CALLS CPU
//       the same with openat(PATH, O_RDONLY) (each fd closed, untimed):
//       under kfv an allowed open is emulated (resolve, check, open,
//       ADDFD).
//   target connect 127.0.0.1:PORT CALLS CPU
//       the same with connect on a fresh non-blocking TCP socket, as QEMU
//       connects (slirp, chardevs): connect, then poll until it completes
//       (socket made and closed untimed). Under kfv an allowed connect is
//       emulated on a copy of the socket.
//   target flood THREADS SECONDS RATE[,RATE...]
//       For each offered RATE (calls per second over all threads; 0 means
//       as fast as possible), THREADS threads call getppid on a fixed
//       schedule for SECONDS. A call's latency runs from the time it was
//       scheduled, not from when the thread got round to it, so a
//       supervisor that falls behind shows as latency instead of hiding
//       in a lower rate (no coordinated omission); a thread that slept
//       until its slot counts from its wake-up instead, so the timer's
//       lateness (up to the default 50 us slack, which also batches the
//       wake-ups) is not charged to the supervisor. Prints per rate
//       KFVB flood offered= threads= calls= achieved= p50_ns= p99_ns= max_ns= fails=
//   target contain THREADS SECONDS
//       THREADS threads call getppid back to back until SECONDS have
//       passed (a bound, for a run nobody ends) or the process is
//       stopped and killed: the flood a supervisor must contain. Each
//       thread counts its calls and failures in a slot of 64 bytes
//       (calls, fails: two little-endian uint64) of the file on stdin,
//       mapped shared, so that the counts can be read from outside while
//       the process is held stopped; stdin must be a regular file opened
//       for reading and writing, THREADS*64 bytes long. Prints
//       KFVB contain pid= threads= when the threads start.
//
// A call "fails" when getppid returns -1 (the deny path); errno= is the
// errno of the last failure.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// call makes the notified syscall directly: glibc might one day cache it.
static long call(void) { return syscall(SYS_getppid); }

static int cmp_u64(const void *a, const void *b) {
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *sorted, size_t n, double p) {
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return sorted[i];
}

static void pin(int cpu) {
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0) {
		perror("target: sched_setaffinity");
		exit(2);
	}
}

enum { OP_GETPPID, OP_OPEN, OP_CONNECT };
static int op = OP_GETPPID;
static const char *op_path;
static struct sockaddr_in op_addr;

// timed runs the measured call: prepared and cleaned up untimed.
static long timed(uint64_t *ns) {
	int s = -1;
	if (op == OP_CONNECT) {
		s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s < 0) {
			perror("target: socket");
			exit(2);
		}
	}
	uint64_t t0 = now_ns();
	long r;
	switch (op) {
	case OP_OPEN:
		r = openat(AT_FDCWD, op_path, O_RDONLY | O_CLOEXEC);
		break;
	case OP_CONNECT:
		r = connect(s, (struct sockaddr *)&op_addr, sizeof op_addr);
		if (r != 0 && errno == EINPROGRESS) {
			struct pollfd pfd = {.fd = s, .events = POLLOUT};
			int soerr = 0;
			socklen_t sl = sizeof soerr;
			r = -1;
			if (poll(&pfd, 1, 5000) == 1 && getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0) {
				r = soerr ? -1 : 0;
				errno = soerr;
			}
		}
		break;
	default:
		r = call();
	}
	int saved = errno;
	*ns = now_ns() - t0;
	if (op == OP_OPEN && r >= 0)
		close((int)r);
	if (op == OP_CONNECT) {
		struct linger lg = {1, 0}; // reset: no TIME_WAIT
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		close(s);
	}
	errno = saved;
	return r < 0 ? -1 : 0;
}

static int rtt(long calls, int cpu) {
	pin(cpu);
	uint64_t *lat = calloc((size_t)calls, sizeof *lat);
	if (!lat) {
		perror("target: calloc");
		return 2;
	}
	uint64_t ns;
	for (int i = 0; i < 2000; i++) // warm caches, the scheduler and the supervisor
		timed(&ns);
	long fails = 0;
	int lasterr = 0;
	uint64_t sum = 0;
	for (long i = 0; i < calls; i++) {
		long r = timed(&ns);
		if (r == -1) {
			fails++;
			lasterr = errno;
		}
		lat[i] = ns;
		sum += lat[i];
	}
	qsort(lat, (size_t)calls, sizeof *lat, cmp_u64);
	printf("KFVB rtt calls=%ld mean_ns=%llu p50_ns=%llu p99_ns=%llu fails=%ld errno=%d\n", calls,
	       (unsigned long long)(sum / (uint64_t)calls), (unsigned long long)pct(lat, (size_t)calls, 0.50),
	       (unsigned long long)pct(lat, (size_t)calls, 0.99), fails, lasterr);
	free(lat);
	return 0;
}

struct worker {
	pthread_t th;
	uint64_t interval; // ns between scheduled calls; 0: back to back
	uint64_t start, end;
	uint64_t *lat;
	size_t cap, n;
	long fails;
	int err;
};

static void *flood_worker(void *arg) {
	struct worker *w = arg;
	uint64_t next = w->start;
	while (w->n < w->cap) {
		uint64_t t0;
		if (w->interval) {
			if (next >= w->end)
				break;
			uint64_t t = now_ns();
			if (t < next) {
				// On time: sleep until the slot and count from the
				// wake-up, so the scheduler's wake-up delay is not
				// charged to the supervisor.
				struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull), .tv_nsec = (long)(next % 1000000000ull)};
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
				t0 = now_ns();
			} else {
				// Behind: the wait for the earlier calls counts.
				t0 = next;
			}
			next += w->interval;
		} else {
			t0 = now_ns();
			if (t0 >= w->end)
				break;
		}
		long r = call();
		uint64_t t1 = now_ns();
		if (r == -1) {
			w->fails++;
			w->err = errno;
		}
		w->lat[w->n++] = t1 - t0;
	}
	return NULL;
}

static int flood(int threads, double seconds, const char *rates) {
	char *list = strdup(rates);
	if (!list) {
		perror("target: strdup");
		return 2;
	}
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		double rate = atof(tok);
		struct worker *ws = calloc((size_t)threads, sizeof *ws);
		if (!ws) {
			perror("target: calloc");
			return 2;
		}
		// Capacity: the offered calls, or a generous bound when unpaced.
		size_t cap = rate > 0 ? (size_t)(rate * seconds / threads) + 16 : (size_t)(2e6 * seconds) + 16;
		uint64_t start = now_ns() + 20000000ull; // let every thread reach its first deadline
		uint64_t end = start + (uint64_t)(seconds * 1e9);
		for (int i = 0; i < threads; i++) {
			ws[i].interval = rate > 0 ? (uint64_t)(1e9 * threads / rate) : 0;
			// Stagger the threads so their calls do not arrive in bursts.
			ws[i].start = start + (ws[i].interval * (uint64_t)i) / (uint64_t)threads;
			ws[i].end = end;
			ws[i].cap = cap;
			ws[i].lat = malloc(cap * sizeof(uint64_t));
			if (!ws[i].lat) {
				perror("target: malloc");
				return 2;
			}
			if (rate <= 0) {
				// Unpaced workers start together.
				ws[i].start = start;
			}
			int e = pthread_create(&ws[i].th, NULL, flood_worker, &ws[i]);
			if (e) {
				fprintf(stderr, "target: pthread_create: %s\n", strerror(e));
				return 2;
			}
		}
		size_t total = 0;
		long fails = 0;
		int err = 0;
		for (int i = 0; i < threads; i++) {
			pthread_join(ws[i].th, NULL);
			total += ws[i].n;
			fails += ws[i].fails;
			if (ws[i].err)
				err = ws[i].err;
		}
		uint64_t stop = now_ns();
		uint64_t *all = malloc((total ? total : 1) * sizeof(uint64_t));
		if (!all) {
			perror("target: malloc");
			return 2;
		}
		size_t k = 0;
		for (int i = 0; i < threads; i++) {
			memcpy(all + k, ws[i].lat, ws[i].n * sizeof(uint64_t));
			k += ws[i].n;
			free(ws[i].lat);
		}
		free(ws);
		qsort(all, total, sizeof *all, cmp_u64);
		// The achieved rate counts until the last call returned: a
		// supervisor that lags stretches the run.
		double wall = (double)((stop > end ? stop : end) - start) / 1e9;
		printf("KFVB flood offered=%.0f threads=%d calls=%zu achieved=%.0f p50_ns=%llu p99_ns=%llu max_ns=%llu fails=%ld errno=%d\n",
		       rate, threads, total, (double)total / wall, (unsigned long long)pct(all, total, 0.50),
		       (unsigned long long)pct(all, total, 0.99), (unsigned long long)(total ? all[total - 1] : 0), fails, err);
		fflush(stdout);
		free(all);
	}
	free(list);
	return 0;
}

// slot is one contain thread's counters in the shared file.
struct slot {
	uint64_t calls, fails;
	char pad[48];
};

struct container {
	pthread_t th;
	struct slot *slot;
	uint64_t end;
};

static void *contain_worker(void *arg) {
	struct container *w = arg;
	uint64_t calls = 0, fails = 0;
	while (now_ns() < w->end) {
		long r = call();
		calls++;
		if (r == -1)
			fails++;
		// Relaxed stores: the reader outside only needs each count
		// whole, not ordered with the other.
		__atomic_store_n(&w->slot->calls, calls, __ATOMIC_RELAXED);
		__atomic_store_n(&w->slot->fails, fails, __ATOMIC_RELAXED);
	}
	return NULL;
}

static int contain(int threads, double seconds) {
	struct stat st;
	size_t size = (size_t)threads * sizeof(struct slot);
	if (threads < 1 || fstat(0, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size < size) {
		fprintf(stderr, "target: contain wants THREADS >= 1 and stdin a regular file of THREADS*%zu bytes\n", sizeof(struct slot));
		return 2;
	}
	struct slot *slots = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, 0, 0);
	if (slots == MAP_FAILED) {
		perror("target: mmap stdin");
		return 2;
	}
	struct container *ws = calloc((size_t)threads, sizeof *ws);
	if (!ws) {
		perror("target: calloc");
		return 2;
	}
	uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
	printf("KFVB contain pid=%d threads=%d\n", (int)getpid(), threads);
	fflush(stdout);
	for (int i = 0; i < threads; i++) {
		ws[i].slot = &slots[i];
		ws[i].end = end;
		int e = pthread_create(&ws[i].th, NULL, contain_worker, &ws[i]);
		if (e) {
			fprintf(stderr, "target: pthread_create: %s\n", strerror(e));
			return 2;
		}
	}
	for (int i = 0; i < threads; i++)
		pthread_join(ws[i].th, NULL);
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && strcmp(argv[1], "rtt") == 0)
		return rtt(atol(argv[2]), atoi(argv[3]));
	if (argc == 5 && strcmp(argv[1], "open") == 0) {
		op = OP_OPEN;
		op_path = argv[2];
		return rtt(atol(argv[3]), atoi(argv[4]));
	}
	if (argc == 5 && strcmp(argv[1], "connect") == 0) {
		char host[64];
		const char *c = strrchr(argv[2], ':');
		if (!c || (size_t)(c - argv[2]) >= sizeof host) {
			fprintf(stderr, "target: connect wants HOST:PORT\n");
			return 2;
		}
		memcpy(host, argv[2], (size_t)(c - argv[2]));
		host[c - argv[2]] = 0;
		op_addr.sin_family = AF_INET;
		op_addr.sin_port = htons((uint16_t)atoi(c + 1));
		if (inet_pton(AF_INET, host, &op_addr.sin_addr) != 1) {
			fprintf(stderr, "target: bad address %s\n", argv[2]);
			return 2;
		}
		op = OP_CONNECT;
		return rtt(atol(argv[3]), atoi(argv[4]));
	}
	if (argc == 5 && strcmp(argv[1], "flood") == 0)
		return flood(atoi(argv[2]), atof(argv[3]), argv[4]);
	if (argc == 4 && strcmp(argv[1], "contain") == 0)
		return contain(atoi(argv[2]), atof(argv[3]));
	fprintf(stderr, "usage: target rtt CALLS CPU | target open PATH CALLS CPU | target connect HOST:PORT CALLS CPU | target flood THREADS SECONDS RATE[,RATE...] | target contain THREADS SECONDS\n");
	return 2;
}
