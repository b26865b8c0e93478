/*
 * kfv test implant: plays a subverted QEMU device model.
 *
 * Test-only. It is built by the integration tests (gcc -shared), loaded
 * into a real qemu-system-x86_64 with LD_PRELOAD, and never installed or
 * used by kfv-run. When the guest sends a trigger, it runs one payload
 * right there, in the QEMU thread that was emulating the guest's I/O, so
 * that every syscall of the payload comes from QEMU's own thread, as after
 * a real escape through a device model.
 *
 * A trigger is the command  "KFV-IMPLANT" NUL payload NUL argument NUL.
 *
 *  1. Block backend (any accelerator): the guest writes one sector that
 *     starts with the command. QEMU's raw driver performs the write with
 *     pwrite64/pwritev64 in a "worker" thread of its thread pool; the
 *     wrappers below recognise the command in the first buffer, run the
 *     payload, then perform the original write.
 *  2. vCPU port I/O (KVM): the guest writes the command byte by byte to
 *     port 0x5f0 ("out dx, al"). After each KVM_RUN that exits with
 *     KVM_EXIT_IO out to that port, the ioctl wrapper reads the byte from
 *     the vCPU's kvm_run page (recorded by the mmap wrappers) and runs the
 *     payload when the command is complete, in the "CPU n/KVM" thread.
 *
 * Output, on fd 2, one line each:
 *   kfv-implant: loaded pid=N
 *   kfv-implant: payload=NAME result=ok|fail detail=TEXT
 * (exec-shell prints "result=exec" before its execve, which does not
 * return when it works.)
 *
 * The implant is active only in a process whose executable is named
 * qemu-system-*: LD_PRELOAD is inherited by every process the tests start
 * under it (kfv-run and its loader, the shell of exec-shell), and those
 * must neither print the loaded line nor run payloads.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAGIC "KFV-IMPLANT"
#define TRIGGER_PORT 0x5f0
/* read-secret copies the secret here in the disk of the intercepted write. */
#define SECRET_OFFSET (1 << 20)
/* other-disk writes this at offset 0 of the other VM's image. */
#define OTHER_DISK_MARK "KFV-IMPLANT-WAS-HERE"
#define CMD_MAX 512
#define MAX_VCPUS 64

static int active;
/* A race test: KFV_RACE_ALLOWED and KFV_RACE_FORBIDDEN are set (see p_race). */
static int race_armed;
/* KFV_IMPLANT_MAIN is set: the main loop takes io_uring jobs (see p_uring). */
static int main_armed;
/* fork-exec-main: fork-exec handed to the main thread (KFV_IMPLANT_MAIN). */
static atomic_int fork_job, fork_job_done;
static void xrace_init(void);
static char fork_job_arg[CMD_MAX];

/*
 * kvm-memslot exposes this page to the guest: memory of QEMU itself (the
 * implant's .data, like any library's), which no guest may see.
 */
static char host_page[4096] __attribute__((aligned(4096))) = "KFV-HOST-MEMORY";

static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	/* One write per line, so lines from threads do not interleave. */
	ssize_t w = write(2, buf, n);
	(void)w;
}

/*
 * thread_name reads the calling thread's name into buf (16 bytes) with
 * PR_GET_NAME, which no profile inspects: the race's report adds no call
 * of its own to the race.
 */
static void thread_name(char buf[16])
{
	if (prctl(PR_GET_NAME, buf) != 0)
		buf[0] = 0;
	buf[15] = 0;
}

static void report(const char *payload, int ok, const char *fmt, ...)
{
	char detail[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	say("kfv-implant: payload=%s result=%s detail=%s", payload, ok ? "ok" : "fail", detail);
}

__attribute__((constructor)) static void implant_init(void)
{
	char exe[512];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		return;
	exe[n] = 0;
	const char *base = strrchr(exe, '/');
	base = base ? base + 1 : exe;
	if (strncmp(base, "qemu-system-", 12) != 0)
		return;
	active = 1;
	race_armed = getenv("KFV_RACE_ALLOWED") && getenv("KFV_RACE_FORBIDDEN");
	main_armed = getenv("KFV_IMPLANT_MAIN") != NULL;
	say("kfv-implant: loaded pid=%d", (int)getpid());
	if (race_armed && !strcmp(getenv("KFV_RACE_FORBIDDEN"), "memfd"))
		xrace_init(); /* race-mmap and race-mprotect-main */
}

static void *real(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	if (!p) {
		say("kfv-implant: dlsym %s: %s", name, dlerror());
		abort();
	}
	return p;
}

/* ---------------------------------------------------------------- payloads */

static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);

static ssize_t raw_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (!real_pwrite64)
		real_pwrite64 = real("pwrite64");
	return real_pwrite64(fd, buf, n, off);
}

/* parse_hostport parses "A.B.C.D:PORT". */
static int parse_hostport(const char *arg, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(arg, ':');
	if (!colon || colon - arg >= (long)sizeof host)
		return -1;
	memcpy(host, arg, colon - arg);
	host[colon - arg] = 0;
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static void p_exec_shell(const char *name, const char *arg)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "touch '%s'", arg);
	say("kfv-implant: payload=%s result=exec detail=execve /bin/sh -c \"%s\"", name, cmd);
	execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
	report(name, 0, "execve /bin/sh: %s", strerror(errno));
}

static void p_read_secret(const char *name, const char *arg, int diskfd)
{
	char buf[4096];
	if (diskfd < 0) {
		report(name, 0, "needs the block trigger (no disk fd)");
		return;
	}
	int fd = open(arg, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		report(name, 0, "open %s: %s", arg, strerror(errno));
		return;
	}
	ssize_t n = read(fd, buf, sizeof buf);
	int e = errno;
	close(fd);
	if (n < 0) {
		report(name, 0, "read %s: %s", arg, strerror(e));
		return;
	}
	ssize_t w = raw_pwrite(diskfd, buf, n, SECRET_OFFSET);
	if (w != n) {
		report(name, 0, "pwrite to disk fd %d: %s", diskfd, w < 0 ? strerror(errno) : "short write");
		return;
	}
	report(name, 1, "copied %zd bytes of %s to disk offset %d", n, arg, SECRET_OFFSET);
}

static void p_connect_back(const char *name, const char *arg)
{
	struct sockaddr_in sa;
	if (parse_hostport(arg, &sa) < 0) {
		report(name, 0, "bad address %s", arg);
		return;
	}
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		report(name, 0, "socket: %s", strerror(errno));
		return;
	}
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
		report(name, 0, "connect %s: %s", arg, strerror(errno));
		close(s);
		return;
	}
	char line[64];
	int n = snprintf(line, sizeof line, "kfv-implant connect-back pid=%d\n", (int)getpid());
	ssize_t w = send(s, line, n, MSG_NOSIGNAL);
	int e = errno;
	close(s);
	if (w != n) {
		report(name, 0, "send: %s", w < 0 ? strerror(e) : "short");
		return;
	}
	report(name, 1, "connected to %s and sent %d bytes", arg, n);
}

/*
 * renamed-connect: connect-back after the thread took the main thread's
 * name (PR_SET_NAME), as a payload would to pass for QEMU's main loop,
 * which may reach the host's loopback when the VM has user-mode
 * networking (slirp forwards the guest's 10.0.2.2 there). The thread
 * gets its own name back afterwards.
 */
static void p_renamed_connect(const char *name, const char *arg)
{
	char mine[16], main_name[17] = "";
	int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, main_name, sizeof main_name - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		report(name, 0, "read the main thread's name: %s", strerror(errno));
		return;
	}
	main_name[n - 1] = 0;
	thread_name(mine);
	if (prctl(PR_SET_NAME, main_name) != 0) {
		report(name, 0, "PR_SET_NAME %s: %s", main_name, strerror(errno));
		return;
	}
	p_connect_back(name, arg);
	prctl(PR_SET_NAME, mine);
}

static void p_bind_shell(const char *name, const char *arg)
{
	struct sockaddr_in sa;
	if (parse_hostport(arg, &sa) < 0) {
		report(name, 0, "bad address %s", arg);
		return;
	}
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		report(name, 0, "socket: %s", strerror(errno));
		return;
	}
	int one = 1;
	if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
		report(name, 0, "setsockopt: %s", strerror(errno));
		close(s);
		return;
	}
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
		report(name, 0, "bind %s: %s", arg, strerror(errno));
		close(s);
		return;
	}
	if (listen(s, 4) < 0) {
		report(name, 0, "listen: %s", strerror(errno));
		close(s);
		return;
	}
	/* Left open: the shell's port stays reachable while QEMU runs. */
	report(name, 1, "listening on %s fd=%d", arg, s);
}

static void p_raw_sniff(const char *name)
{
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (s < 0) {
		report(name, 0, "socket(AF_PACKET, SOCK_RAW): %s", strerror(errno));
		return;
	}
	/* Left open, so that the test can find it in /proc/net/packet. */
	report(name, 1, "fd=%d", s);
}

static void p_rwx(const char *name)
{
	/* mov eax, 42; ret */
	static const unsigned char stub[] = {0xb8, 42, 0, 0, 0, 0xc3};
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		/* Never jump anywhere without the mapping. */
		report(name, 0, "mmap rwx: %s (stub not run)", strerror(errno));
		return;
	}
	memcpy(p, stub, sizeof stub);
	int r = ((int (*)(void))p)();
	munmap(p, 4096);
	report(name, r == 42, "stub at %p returned=%d", p, r);
}

/*
 * The byte patched by text-patch and procmem-write: the first byte of
 * QEMU's ELF entry point (_start). It runs once, before main, and never
 * again, and it is put back at once anyway.
 */
static unsigned char *entry_byte(void)
{
	return (unsigned char *)getauxval(AT_ENTRY);
}

static void p_text_patch(const char *name)
{
	unsigned char *b = entry_byte();
	long pg = sysconf(_SC_PAGESIZE);
	void *page = (void *)((uintptr_t)b & ~(uintptr_t)(pg - 1));
	if (mprotect(page, pg, PROT_READ | PROT_WRITE | PROT_EXEC) < 0) {
		report(name, 0, "mprotect(%p, rwx) of QEMU text: %s", page, strerror(errno));
		return;
	}
	unsigned char old = *b;
	*(volatile unsigned char *)b = old ^ 0xff;
	unsigned char now = *(volatile unsigned char *)b;
	*(volatile unsigned char *)b = old;
	int e = 0;
	if (mprotect(page, pg, PROT_READ | PROT_EXEC) < 0)
		e = errno;
	report(name, now == (unsigned char)(old ^ 0xff), "patched %p 0x%02x->0x%02x, restored%s%s", (void *)b, old, now,
	       e ? "; mprotect r-x: " : "", e ? strerror(e) : "");
}

static void p_procmem_write(const char *name)
{
	unsigned char *b = entry_byte();
	int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		report(name, 0, "open /proc/self/mem O_RDWR: %s", strerror(errno));
		return;
	}
	unsigned char old = *b, neu = old ^ 0xff;
	ssize_t w = raw_pwrite(fd, &neu, 1, (off_t)(uintptr_t)b);
	int e = errno;
	unsigned char now = *(volatile unsigned char *)b;
	if (w == 1 && raw_pwrite(fd, &old, 1, (off_t)(uintptr_t)b) != 1)
		say("kfv-implant: procmem-write could not restore %p: %s", (void *)b, strerror(errno));
	close(fd);
	if (w != 1) {
		report(name, 0, "pwrite /proc/self/mem at %p: %s", (void *)b, strerror(e));
		return;
	}
	report(name, now == neu, "wrote %p 0x%02x->0x%02x through /proc/self/mem, restored", (void *)b, old, now);
}

static void p_neighbor_signal(const char *name, const char *arg)
{
	pid_t pid = (pid_t)atoi(arg);
	if (pid <= 1) {
		report(name, 0, "bad pid %s", arg);
		return;
	}
	if (kill(pid, SIGKILL) < 0) {
		report(name, 0, "kill(%d, SIGKILL): %s", (int)pid, strerror(errno));
		return;
	}
	report(name, 1, "kill(%d, SIGKILL) sent", (int)pid);
}

/* neighbor-peek: argument PID:HEXADDR; reads 4 bytes there, then attaches. */
static void p_neighbor_peek(const char *name, const char *arg)
{
	char *end;
	pid_t pid = (pid_t)strtol(arg, &end, 10);
	if (pid <= 1 || *end != ':') {
		report(name, 0, "bad argument %s (want PID:HEXADDR)", arg);
		return;
	}
	uintptr_t addr = (uintptr_t)strtoull(end + 1, NULL, 16);
	unsigned char got[4] = {0};
	struct iovec local = {got, sizeof got}, remote = {(void *)addr, sizeof got};
	char rd[96], pt[96];
	int ok = 0;
	ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
	if (n == (ssize_t)sizeof got) {
		snprintf(rd, sizeof rd, "process_vm_readv=ok:%02x%02x%02x%02x", got[0], got[1], got[2], got[3]);
		ok++;
	} else {
		snprintf(rd, sizeof rd, "process_vm_readv=fail:%s", n < 0 ? strerror(errno) : "short");
	}
	if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) == 0) {
		int st;
		/* The tracee stops with SIGSTOP; detach once it has. */
		waitpid(pid, &st, __WALL);
		ptrace(PTRACE_DETACH, pid, NULL, NULL);
		snprintf(pt, sizeof pt, "ptrace_attach=ok");
		ok++;
	} else {
		snprintf(pt, sizeof pt, "ptrace_attach=fail:%s", strerror(errno));
	}
	/* ok when either worked: a kfv run must stop both. */
	report(name, ok > 0, "%s,%s", rd, pt);
}

static void p_fork_exec(const char *name, const char *arg)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "touch '%s'", arg);
	pid_t pid = fork();
	if (pid < 0) {
		report(name, 0, "fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	if (waitpid(pid, &st, 0) < 0) {
		report(name, 0, "waitpid %d: %s", (int)pid, strerror(errno));
		return;
	}
	report(name, WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d ran /bin/sh -c \"%s\": status 0x%x", (int)pid, cmd, st);
}

/*
 * fork-exec-main: fork-exec run by QEMU's main thread, from its next
 * ppoll, as a payload that hijacked a main-loop callback would: the
 * thread whose fork -daemonize needs. Needs KFV_IMPLANT_MAIN.
 */
static void p_fork_exec_main(const char *name, const char *arg)
{
	if (!main_armed) {
		report(name, 0, "want KFV_IMPLANT_MAIN in QEMU's environment");
		return;
	}
	snprintf(fork_job_arg, sizeof fork_job_arg, "%s", arg);
	atomic_store(&fork_job_done, 0);
	atomic_store(&fork_job, 1);
	say("kfv-implant: %s handed to the main thread", name);
	/* The guest's write completes after the payload has run. */
	for (int i = 0; i < 500 && !atomic_load(&fork_job_done); i++)
		usleep(10000);
}

static void p_other_disk(const char *name, const char *arg)
{
	int fd = open(arg, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		report(name, 0, "open %s O_RDWR: %s", arg, strerror(errno));
		return;
	}
	ssize_t w = raw_pwrite(fd, OTHER_DISK_MARK, sizeof OTHER_DISK_MARK - 1, 0);
	int e = errno;
	close(fd);
	if (w != sizeof OTHER_DISK_MARK - 1) {
		report(name, 0, "pwrite %s: %s", arg, w < 0 ? strerror(e) : "short");
		return;
	}
	report(name, 1, "wrote %s at offset 0 of %s", OTHER_DISK_MARK, arg);
}

/*
 * share-*: from a VM with a writable 9p share, reach files outside it
 * with the calls the share's file work uses. Argument: SHARE|STEPS.
 * SHARE is a directory QEMU exports, holding a symlink "esc" the test
 * planted to a directory OUTSIDE beside it (SHARE/../outside), and a
 * file "mine"; STEPS is a comma-separated list of the steps to take.
 * Each step names an object outside the share: through the symlink
 * (rename both ways, link, chmod, chown, mkdir, symlink), through ".."
 * (chmod) and through /proc/self/fd/N of an fd QEMU holds on a file
 * outside the share, the VM's disk (chmod). The detail lists each step's
 * errno (0: done); result=ok when every step was done.
 */
static void p_share_escape(const char *name, const char *arg, int diskfd)
{
	char share[512], a[640], b[640];
	const char *bar = strchr(arg, '|');
	if (!bar || (size_t)(bar - arg) >= sizeof share) {
		report(name, 0, "argument %s: want SHARE|STEPS", arg);
		return;
	}
	memcpy(share, arg, bar - arg);
	share[bar - arg] = 0;
	char steps[600];
	snprintf(steps, sizeof steps, "%s", bar + 1);
	char detail[600] = "";
	size_t off = 0;
	int n = 0, done = 0;
	for (char *sv, *st = strtok_r(steps, ",", &sv); st; st = strtok_r(NULL, ",", &sv)) {
		long r = -1;
		errno = EINVAL;
		if (!strcmp(st, "rename-in")) {
			snprintf(a, sizeof a, "%s/esc/rename-victim", share);
			snprintf(b, sizeof b, "%s/stolen", share);
			r = syscall(SYS_renameat, AT_FDCWD, a, AT_FDCWD, b);
		} else if (!strcmp(st, "rename-out")) {
			snprintf(a, sizeof a, "%s/mine", share);
			snprintf(b, sizeof b, "%s/esc/planted", share);
			r = syscall(SYS_renameat, AT_FDCWD, a, AT_FDCWD, b);
		} else if (!strcmp(st, "link-in")) {
			snprintf(a, sizeof a, "%s/esc/link-victim", share);
			snprintf(b, sizeof b, "%s/linked", share);
			r = syscall(SYS_linkat, AT_FDCWD, a, AT_FDCWD, b, 0);
		} else if (!strcmp(st, "chmod-symlink")) {
			snprintf(a, sizeof a, "%s/esc/chmod-victim", share);
			r = syscall(SYS_fchmodat, AT_FDCWD, a, 0777);
		} else if (!strcmp(st, "chmod-dotdot")) {
			snprintf(a, sizeof a, "%s/../outside/dotdot-victim", share);
			r = syscall(SYS_chmod, a, 0777);
		} else if (!strcmp(st, "chmod-fd")) {
			snprintf(a, sizeof a, "/proc/self/fd/%d", diskfd);
			r = syscall(SYS_chmod, a, 0777);
		} else if (!strcmp(st, "chown-symlink")) {
			snprintf(a, sizeof a, "%s/esc/chown-victim", share);
			r = syscall(SYS_fchownat, AT_FDCWD, a, 1234, 1234, 0);
		} else if (!strcmp(st, "mkdir-symlink")) {
			snprintf(a, sizeof a, "%s/esc/newdir", share);
			r = syscall(SYS_mkdirat, AT_FDCWD, a, 0755);
		} else if (!strcmp(st, "symlink-symlink")) {
			snprintf(a, sizeof a, "%s/esc/newlink", share);
			r = syscall(SYS_symlinkat, "kfv-was-here", AT_FDCWD, a);
		}
		int e = r ? errno : 0;
		n++;
		if (!e)
			done++;
		if (off < sizeof detail)
			off += snprintf(detail + off, sizeof detail - off, " %s=%s", st, e ? strerrorname_np(e) : "0");
	}
	report(name, n > 0 && done == n, "done=%d/%d%s", done, n, detail);
}

static void p_host_mount(const char *name, const char *arg)
{
	if (mount("none", arg, "tmpfs", 0, NULL) < 0) {
		report(name, 0, "mount tmpfs on %s: %s", arg, strerror(errno));
		return;
	}
	report(name, 1, "tmpfs mounted on %s", arg);
}

static void p_bpf(const char *name)
{
	/* r0 = 0; exit: a socket filter that drops everything. */
	struct bpf_insn prog[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
		{.code = BPF_JMP | BPF_EXIT},
	};
	static char license[] = "GPL";
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insn_cnt = sizeof prog / sizeof prog[0];
	attr.insns = (uint64_t)(uintptr_t)prog;
	attr.license = (uint64_t)(uintptr_t)license;
	long fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
	if (fd < 0) {
		report(name, 0, "bpf(BPF_PROG_LOAD): %s", strerror(errno));
		return;
	}
	close((int)fd);
	report(name, 1, "bpf(BPF_PROG_LOAD) returned fd=%ld", fd);
}

/* --------------------------------------------------------- kvm-memslot */

static int vm_fd = -1;
static struct kvm_run *run_of(int fd);
static void p_race_memslot(const char *name, const char *arg, int fd, struct kvm_run *run);
static int trigger_fd;

/*
 * A page of the implant's .bss: anonymous memory, as QEMU's own .bss
 * (function tables, secrets), malloc's arenas and thread stacks are. The
 * page in .data above is file-backed, which kfv told from guest RAM by
 * its backing alone; this one only the sealed guest RAM tells apart.
 */
static char bss_page[4096] __attribute__((aligned(4096)));

/* kvm-memslot: argument GPA in hex, where the page appears in the guest;
 * kvm-memslot-bss maps a page of .bss instead. */
static void p_kvm_memslot(const char *name, const char *arg)
{
	char *page = host_page;
	if (strstr(name, "-bss")) {
		memcpy(bss_page, host_page, sizeof host_page);
		page = bss_page;
	}
	if (vm_fd < 0) {
		report(name, 0, "no KVM VM fd seen (needs the KVM port trigger)");
		return;
	}
	/* A slot number QEMU does not use: the highest the host offers. */
	int (*rioctl)(int, unsigned long, ...) = real("ioctl");
	int nr = rioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	if (nr <= 0)
		nr = 32;
	uint64_t gpa = strtoull(arg, NULL, 16);
	struct kvm_userspace_memory_region r = {
		.slot = (uint32_t)(nr - 1),
		.guest_phys_addr = gpa,
		.memory_size = sizeof host_page,
		.userspace_addr = (uint64_t)(uintptr_t)page,
	};
	if (rioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
		report(name, 0, "KVM_SET_USER_MEMORY_REGION slot %u gpa 0x%llx: %s", r.slot, (unsigned long long)gpa, strerror(errno));
		return;
	}
	report(name, 1, "KVM_SET_USER_MEMORY_REGION slot %u maps %p (\"%s\") at gpa 0x%llx", r.slot, (void *)page, page, (unsigned long long)gpa);
}

/* ------------------------------------------------------------ the races */

/*
 * race-open, race-connect and race-unlink: the TOCTOU attack on a
 * supervisor that reads a pointer argument, checks it and lets the call
 * continue. One thread
 * keeps rewriting a buffer between an allowed value and a forbidden one
 * while another makes N calls with that buffer (N is the argument).
 *
 * The calls are made by QEMU's main thread: it is the thread that opens
 * images and connects chardevs, so the allowed half of the race is allowed
 * to it and the race is between two verdicts, not against a thread that
 * may do nothing. The trigger (in a vCPU or worker thread) hands the job
 * over; the main thread runs it from its next ppoll, as a payload that
 * hijacked a main-loop callback would. The values come from the
 * environment, KFV_RACE_ALLOWED and KFV_RACE_FORBIDDEN (paths of equal
 * length, or A.B.C.D:PORT), so that the forbidden one is not on QEMU's
 * command line, which kfv admits as the VM's own.
 *
 * Report: result=ok when at least one call reached the forbidden object
 * (an open that read the forbidden file's first byte 's', a connection
 * whose peer is the forbidden port, an unlink after which the forbidden
 * file is gone; race-unlink makes the allowed file, QEMU's pidfile, again
 * after each unlink of it), with
 *   tid=T thread=NAME attempts=N allowed=A forbidden=F denied=D errno=E
 * (E: the errno of the last refused call).
 */

#define RACE_BUF 256

static atomic_int race_pending; /* 1 open, 2 connect, 3 unlink, 4 sendmsg, 5 sendmmsg, 6 memslot, 7 mmap, 8 mprotect */
static void run_race_memslot_main(void);
static void run_race_mmap(const char *name, long n);
static void run_race_mprotect(const char *name, long n);
static atomic_long race_n;
static char race_buf[RACE_BUF];
static char race_alt[2][RACE_BUF];
static size_t race_len;
static atomic_int race_stop;

static void *race_swapper(void *arg)
{
	(void)arg;
	for (unsigned i = 0; !atomic_load_explicit(&race_stop, memory_order_relaxed); i++)
		memcpy(race_buf, race_alt[i & 1], race_len);
	return NULL;
}

static void p_race(const char *name, const char *arg)
{
	char *end;
	long n = strtol(arg, &end, 10);
	if (!race_armed || *end || n <= 0) {
		report(name, 0, "want KFV_RACE_ALLOWED, KFV_RACE_FORBIDDEN and a positive count, got %s", arg);
		return;
	}
	static const char *const modes[] = {"race-open", "race-connect", "race-unlink", "race-sendmsg", "race-sendmmsg"};
	int mode = 0;
	for (int i = 0; i < (int)(sizeof modes / sizeof modes[0]); i++)
		if (!strcmp(name, modes[i]))
			mode = i + 1;
	if (!mode) {
		report(name, 0, "unknown payload");
		return;
	}
	atomic_store(&race_n, n);
	atomic_store(&race_pending, mode);
	say("kfv-implant: %s handed to the main thread", name);
}

/*
 * race-sendmsg: a message without an address on a connected TCP socket
 * (allowed) against one with an address on a UDP socket (refused). The
 * swapper flips both the message's msg_name and, with dup2, what the fd
 * number refers to, so that a check of the message and the fd can be
 * followed by the kernel's use of the other pair. A datagram reaching
 * KFV_RACE_FORBIDDEN (a UDP port the test counts on) is the race won;
 * the implant cannot see it, so its report says forbidden=0 and the test
 * counts.
 */
static struct msghdr race_msg;
static struct sockaddr_in race_sa;
static int race_fd = -1, race_tcp = -1, race_udp = -1;

static void *race_msg_swapper(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&race_stop, memory_order_relaxed)) {
		race_msg.msg_name = NULL;
		race_msg.msg_namelen = 0;
		dup2(race_tcp, race_fd);
		race_msg.msg_name = &race_sa;
		race_msg.msg_namelen = sizeof race_sa;
		dup2(race_udp, race_fd);
	}
	race_msg.msg_name = NULL;
	race_msg.msg_namelen = 0;
	dup2(race_tcp, race_fd);
	return NULL;
}

static void run_race_sendmsg(void)
{
	const char *name = "race-sendmsg";
	struct sockaddr_in allowed;
	long n = atomic_load(&race_n), nallowed = 0, ndenied = 0;
	int lasterr = 0;
	if (parse_hostport(getenv("KFV_RACE_ALLOWED"), &allowed) || parse_hostport(getenv("KFV_RACE_FORBIDDEN"), &race_sa)) {
		report(name, 0, "bad addresses");
		return;
	}
	race_tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	race_udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (race_tcp < 0 || race_udp < 0 || connect(race_tcp, (struct sockaddr *)&allowed, sizeof allowed) != 0) {
		report(name, 0, "set up the sockets: %s", strerror(errno));
		return;
	}
	race_fd = fcntl(race_tcp, F_DUPFD_CLOEXEC, 100);
	static char data[] = "kfv-race-sendmsg\n";
	static struct iovec iov = {data, sizeof data - 1};
	race_msg.msg_iov = &iov;
	race_msg.msg_iovlen = 1;
	atomic_store(&race_stop, 0);
	pthread_t th;
	int e = pthread_create(&th, NULL, race_msg_swapper, NULL);
	if (e) {
		report(name, 0, "pthread_create: %s", strerror(e));
		return;
	}
	for (long i = 0; i < n; i++) {
		if (sendmsg(race_fd, &race_msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			ndenied++;
			lasterr = errno;
		} else {
			nallowed++;
		}
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	close(race_fd);
	close(race_tcp);
	close(race_udp);
	char comm[16];
	thread_name(comm);
	report(name, 0, "tid=%d thread=%s attempts=%ld allowed=%ld forbidden=0 denied=%ld errno=%s",
	       (int)gettid(), comm, n, nallowed, ndenied, lasterr ? strerrorname_np(lasterr) : "0");
}

/*
 * race-sendmmsg: race-sendmsg's race with a vector of RACE_MMSG messages
 * in one sendmmsg. The swapper flips every message's msg_name with the
 * fd, so that a check of the vector and the fd can be followed by the
 * kernel's use of the other pair; the kernel reads each message's header
 * when it sends that message, so one call may send some messages and not
 * others. A datagram reaching KFV_RACE_FORBIDDEN is the race won, counted
 * by the test as for race-sendmsg.
 *
 * The messages have different lengths, so that each msg_len written back
 * can be checked against its own message. Before each call every msg_len
 * is set to RACE_MMSG_UNSET; after it, the first R (what sendmmsg
 * returned) must hold their message's length and the others RACE_MMSG_UNSET,
 * as the kernel leaves them. The report adds, after errno=E,
 *   sent=S bytes=B badlen=L returns=-1:C,0:C,1:C,...
 * S: the messages sendmmsg said it sent; B: their bytes (what the allowed
 * TCP peer must have received when no message went elsewhere); L:
 * msg_len values not as the kernel leaves them; returns: how many calls
 * returned each value. allowed counts the calls that returned more than
 * 0, denied those that failed.
 */
#define RACE_MMSG 3
#define RACE_MMSG_UNSET 0xdeadbeefu

static struct mmsghdr race_mmsg[RACE_MMSG];

static void *race_mmsg_swapper(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&race_stop, memory_order_relaxed)) {
		for (int i = 0; i < RACE_MMSG; i++) {
			race_mmsg[i].msg_hdr.msg_name = NULL;
			race_mmsg[i].msg_hdr.msg_namelen = 0;
		}
		dup2(race_tcp, race_fd);
		for (int i = 0; i < RACE_MMSG; i++) {
			race_mmsg[i].msg_hdr.msg_name = &race_sa;
			race_mmsg[i].msg_hdr.msg_namelen = sizeof race_sa;
		}
		dup2(race_udp, race_fd);
	}
	for (int i = 0; i < RACE_MMSG; i++) {
		race_mmsg[i].msg_hdr.msg_name = NULL;
		race_mmsg[i].msg_hdr.msg_namelen = 0;
	}
	dup2(race_tcp, race_fd);
	return NULL;
}

static void run_race_sendmmsg(void)
{
	const char *name = "race-sendmmsg";
	struct sockaddr_in allowed;
	long n = atomic_load(&race_n), nallowed = 0, ndenied = 0, nsent = 0, nbytes = 0, badlen = 0;
	long returns[RACE_MMSG + 2] = {0}; /* returns[r + 1]: calls that returned r */
	int lasterr = 0;
	if (parse_hostport(getenv("KFV_RACE_ALLOWED"), &allowed) || parse_hostport(getenv("KFV_RACE_FORBIDDEN"), &race_sa)) {
		report(name, 0, "bad addresses");
		return;
	}
	race_tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	race_udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (race_tcp < 0 || race_udp < 0 || connect(race_tcp, (struct sockaddr *)&allowed, sizeof allowed) != 0) {
		report(name, 0, "set up the sockets: %s", strerror(errno));
		return;
	}
	race_fd = fcntl(race_tcp, F_DUPFD_CLOEXEC, 100);
	/* Lengths 20, 21 and 22; each starts with the payload's name, which
	 * the test looks for on the allowed peer's connection. */
	static char data[RACE_MMSG][24] = {"kfv-race-sendmmsg a\n", "kfv-race-sendmmsg bb\n", "kfv-race-sendmmsg ccc\n"};
	static struct iovec iov[RACE_MMSG];
	unsigned len[RACE_MMSG];
	memset(race_mmsg, 0, sizeof race_mmsg);
	for (int i = 0; i < RACE_MMSG; i++) {
		len[i] = strlen(data[i]);
		iov[i] = (struct iovec){data[i], len[i]};
		race_mmsg[i].msg_hdr.msg_iov = &iov[i];
		race_mmsg[i].msg_hdr.msg_iovlen = 1;
	}
	atomic_store(&race_stop, 0);
	pthread_t th;
	int e = pthread_create(&th, NULL, race_mmsg_swapper, NULL);
	if (e) {
		report(name, 0, "pthread_create: %s", strerror(e));
		return;
	}
	int toomany = 0;
	for (long i = 0; i < n && !toomany; i++) {
		for (int k = 0; k < RACE_MMSG; k++)
			race_mmsg[k].msg_len = RACE_MMSG_UNSET;
		int r = sendmmsg(race_fd, race_mmsg, RACE_MMSG, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > RACE_MMSG) {
			toomany = r;
			break;
		}
		if (r < 0) {
			ndenied++;
			lasterr = errno;
			r = -1;
		} else if (r > 0) {
			nallowed++;
		}
		returns[r + 1]++;
		for (int k = 0; k < RACE_MMSG; k++) {
			unsigned want = k < r ? len[k] : RACE_MMSG_UNSET;
			if (race_mmsg[k].msg_len != want)
				badlen++;
			if (k < r) {
				nsent++;
				nbytes += len[k];
			}
		}
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	close(race_fd);
	close(race_tcp);
	close(race_udp);
	if (toomany) {
		report(name, 0, "sendmmsg of %d messages returned %d", RACE_MMSG, toomany);
		return;
	}
	char comm[16], rets[128];
	thread_name(comm);
	int off = 0;
	for (int r = -1; r <= RACE_MMSG; r++)
		off += snprintf(rets + off, sizeof rets - off, "%s%d:%ld", r < 0 ? "" : ",", r, returns[r + 1]);
	report(name, 0, "tid=%d thread=%s attempts=%ld allowed=%ld forbidden=0 denied=%ld errno=%s sent=%ld bytes=%ld badlen=%ld returns=%s",
	       (int)gettid(), comm, n, nallowed, ndenied, lasterr ? strerrorname_np(lasterr) : "0", nsent, nbytes, badlen, rets);
}

static void run_race(int mode)
{
	if (mode == 6) {
		run_race_memslot_main();
		return;
	}
	if (mode == 7) {
		run_race_mmap("race-mmap-main", atomic_load(&race_n));
		return;
	}
	if (mode == 8) {
		run_race_mprotect("race-mprotect-main", atomic_load(&race_n));
		return;
	}
	if (mode == 4) {
		run_race_sendmsg();
		return;
	}
	if (mode == 5) {
		run_race_sendmmsg();
		return;
	}
	const char *name = mode == 1 ? "race-open" : mode == 2 ? "race-connect" : "race-unlink";
	const char *allowed = getenv("KFV_RACE_ALLOWED"), *forbidden = getenv("KFV_RACE_FORBIDDEN");
	long n = atomic_load(&race_n), nallowed = 0, nforbidden = 0, ndenied = 0;
	int lasterr = 0;
	struct sockaddr_in sa[2];

	if (mode != 2) {
		race_len = strlen(allowed) + 1;
		if (race_len != strlen(forbidden) + 1 || race_len > RACE_BUF) {
			report(name, 0, "the two paths must have the same length, under %d bytes", RACE_BUF);
			return;
		}
		memcpy(race_alt[0], allowed, race_len);
		memcpy(race_alt[1], forbidden, race_len);
	} else {
		if (parse_hostport(allowed, &sa[0]) || parse_hostport(forbidden, &sa[1])) {
			report(name, 0, "bad addresses %s %s", allowed, forbidden);
			return;
		}
		race_len = sizeof sa[0];
		memcpy(race_alt[0], &sa[0], race_len);
		memcpy(race_alt[1], &sa[1], race_len);
	}
	memcpy(race_buf, race_alt[0], race_len);
	atomic_store(&race_stop, 0);
	pthread_t th;
	int e = pthread_create(&th, NULL, race_swapper, NULL);
	if (e) {
		report(name, 0, "pthread_create: %s", strerror(e));
		return;
	}
	for (long i = 0; i < n; i++) {
		if (mode == 1) {
			int fd = openat(AT_FDCWD, race_buf, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				ndenied++;
				lasterr = errno;
				continue;
			}
			char c = 0;
			if (read(fd, &c, 1) == 1 && c == 's')
				nforbidden++;
			else
				nallowed++;
			close(fd);
		} else if (mode == 3) {
			if (unlink(race_buf) != 0) {
				ndenied++;
				lasterr = errno;
				continue;
			}
			if (access(forbidden, F_OK) != 0) {
				nforbidden++;
				break; /* it cannot be made again from here */
			}
			nallowed++;
			/* The allowed file (QEMU's pidfile) is made again for the
			 * next attempt. */
			int fd = open(allowed, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
			if (fd < 0) {
				atomic_store(&race_stop, 1);
				pthread_join(th, NULL);
				report(name, 0, "make %s again: %s", allowed, strerror(errno));
				return;
			}
			close(fd);
		} else {
			int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (s < 0) {
				ndenied++;
				lasterr = errno;
				continue;
			}
			if (connect(s, (struct sockaddr *)race_buf, sizeof(struct sockaddr_in)) != 0) {
				ndenied++;
				lasterr = errno;
			} else {
				struct sockaddr_in peer;
				socklen_t pl = sizeof peer;
				if (getpeername(s, (struct sockaddr *)&peer, &pl) == 0 && peer.sin_port == sa[1].sin_port)
					nforbidden++;
				else
					nallowed++;
				/* Reset instead of FIN: no TIME_WAIT, so that N
				 * connections do not use up the ephemeral ports. */
				struct linger lg = {1, 0};
				setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			}
			close(s);
		}
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	char comm[16];
	thread_name(comm);
	report(name, nforbidden > 0, "tid=%d thread=%s attempts=%ld allowed=%ld forbidden=%ld denied=%ld errno=%s",
	       (int)gettid(), comm, n, nallowed, nforbidden, ndenied, lasterr ? strerrorname_np(lasterr) : "0");
}

/* ------------------------------------------- race-mmap and race-mprotect */

/*
 * race-mmap, race-mmap-main and race-mprotect-main: the TOCTOU attack on
 * a supervisor that decides an executable mapping from state another
 * QEMU thread can change, then lets the call continue.
 *
 * race-mmap and race-mmap-main: the fd number XRACE_FD refers in turn to
 * a library kfv admits (KFV_RACE_ALLOWED, opened read-only) and to a
 * memfd holding a page of 'F' (KFV_RACE_FORBIDDEN=memfd): a swapper
 * thread keeps making it the one and then the other with dup2, while N
 * calls mmap(NULL, 4096, PROT_READ|PROT_EXEC, MAP_PRIVATE, XRACE_FD, 0),
 * each read and unmapped: a first byte 'F' is the forbidden memfd made
 * executable (the race won), 0x7f the library's ELF header (allowed).
 * race-mmap makes the calls from the vCPU thread that got the port
 * trigger, race-mmap-main from QEMU's main thread.
 *
 * race-mprotect-main: a swapper thread keeps moving (mremap with
 * MREMAP_FIXED) anonymous read-write memory (allowed to become executable
 * from the main thread under TCG only) and then the memfd's page, mapped
 * read-only and shared (forbidden), to the fixed address XRACE_ADDR and
 * back to their own places, while QEMU's main thread makes N calls
 * mprotect(XRACE_ADDR, 4096, PROT_READ|PROT_EXEC). A moved mapping keeps
 * its protection, so after each success the caller parks the swapper and
 * finds in /proc/self/maps which of the two became executable, wherever
 * it is now: the memfd is the race won, the anonymous page the allowed
 * outcome; it then takes the execute right back (an mprotect without
 * PROT_EXEC, which nothing inspects) and lets the swapper go on. Between
 * two moves nothing is mapped at XRACE_ADDR: such a call fails with
 * ENOMEM (empty=K), is neither allowed nor refused, and is made again
 * once the swapper has moved on (N counts the others).
 *
 * The library, the memfd and /proc/self/maps are opened when the implant
 * loads (QEMU's start-up, its main thread, before any guest input), so
 * that the payloads themselves open nothing. The report is p_race's, with
 * other=K: mappings that showed neither page.
 */
#define XRACE_FD 200
#define XRACE_ADDR 0x6e0000000000ull

static int xrace_lib = -1, xrace_memfd = -1, xrace_maps = -1;
static char xrace_why[160] = "the race's files were not set up";
static atomic_int xrace_park, xrace_parked;

static void xrace_init(void)
{
	const char *lib = getenv("KFV_RACE_ALLOWED");
	xrace_lib = open(lib, O_RDONLY | O_CLOEXEC);
	if (xrace_lib < 0) {
		snprintf(xrace_why, sizeof xrace_why, "open %s: %s", lib, strerror(errno));
		return;
	}
	xrace_memfd = memfd_create("kfv-race", MFD_CLOEXEC);
	static char page[4096];
	memset(page, 'F', sizeof page);
	if (xrace_memfd < 0 || write(xrace_memfd, page, sizeof page) != (ssize_t)sizeof page) {
		snprintf(xrace_why, sizeof xrace_why, "memfd with the forbidden page: %s", strerror(errno));
		xrace_memfd = -1;
		return;
	}
	xrace_maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (xrace_maps < 0 || dup3(xrace_lib, XRACE_FD, O_CLOEXEC) != XRACE_FD) {
		snprintf(xrace_why, sizeof xrace_why, "/proc/self/maps and fd %d: %s", XRACE_FD, strerror(errno));
		xrace_maps = -1;
		return;
	}
	xrace_why[0] = 0;
}

static void *xmap_swapper(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&race_stop, memory_order_relaxed)) {
		dup2(xrace_memfd, XRACE_FD);
		dup2(xrace_lib, XRACE_FD);
	}
	dup2(xrace_lib, XRACE_FD);
	return NULL;
}

static void xrace_report(const char *name, long n, long nallowed, long nforbidden, long ndenied, int lasterr, const char *extra)
{
	char comm[16];
	thread_name(comm);
	report(name, nforbidden > 0, "tid=%d thread=%s attempts=%ld allowed=%ld forbidden=%ld denied=%ld errno=%s %s",
	       (int)gettid(), comm, n, nallowed, nforbidden, ndenied, lasterr ? strerrorname_np(lasterr) : "0", extra);
}

/* run_race_mmap makes race-mmap's calls in the calling thread. Raw
 * syscalls: the implant's own mmap wrapper would add calls of its own. */
static void run_race_mmap(const char *name, long n)
{
	long nallowed = 0, nforbidden = 0, ndenied = 0, nother = 0;
	int lasterr = 0, lastother = 0;
	if (xrace_why[0]) {
		report(name, 0, "set up: %s", xrace_why);
		return;
	}
	atomic_store(&race_stop, 0);
	pthread_t th;
	int e = pthread_create(&th, NULL, xmap_swapper, NULL);
	if (e) {
		report(name, 0, "pthread_create: %s", strerror(e));
		return;
	}
	for (long i = 0; i < n; i++) {
		long p = syscall(SYS_mmap, 0L, 4096L, (long)(PROT_READ | PROT_EXEC), (long)MAP_PRIVATE, (long)XRACE_FD, 0L);
		if (p == -1) {
			ndenied++;
			lasterr = errno;
			continue;
		}
		unsigned char c = *(volatile unsigned char *)p;
		if (c == 'F')
			nforbidden++;
		else if (c == 0x7f)
			nallowed++;
		else
			nother++, lastother = c;
		syscall(SYS_munmap, p, 4096L);
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	char extra[64];
	snprintf(extra, sizeof extra, "other=%ld lastother=%d", nother, lastother);
	xrace_report(name, n, nallowed, nforbidden, ndenied, lasterr, extra);
}

/* The two mappings' own places, and the page size. */
#define XPROT_ANON (XRACE_ADDR + 0x10000)
#define XPROT_MEMFD (XRACE_ADDR + 0x20000)

/* xprot_park waits, between two moves, while the caller looks. */
static void xprot_park(void)
{
	if (!atomic_load_explicit(&xrace_park, memory_order_acquire))
		return;
	atomic_store(&xrace_parked, 1);
	while (atomic_load(&xrace_park))
		sched_yield(); /* two cores: the caller reads the maps meanwhile */
	atomic_store(&xrace_parked, 0);
}

static long xprot_move(unsigned long long from, unsigned long long to)
{
	return syscall(SYS_mremap, (long)from, 4096L, 4096L, (long)(MREMAP_MAYMOVE | MREMAP_FIXED), (long)to);
}

/* xprot_moves counts the swapper's moves. */
static atomic_long xprot_moves;

static void *xprot_swapper(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&race_stop, memory_order_relaxed)) {
		xprot_move(XPROT_ANON, XRACE_ADDR);
		atomic_fetch_add(&xprot_moves, 1);
		xprot_park();
		xprot_move(XRACE_ADDR, XPROT_ANON);
		atomic_fetch_add(&xprot_moves, 1);
		xprot_park();
		xprot_move(XPROT_MEMFD, XRACE_ADDR);
		atomic_fetch_add(&xprot_moves, 1);
		xprot_park();
		xprot_move(XRACE_ADDR, XPROT_MEMFD);
		atomic_fetch_add(&xprot_moves, 1);
		xprot_park();
	}
	return NULL;
}

/*
 * xprot_seen reads /proc/self/maps and says which of the race's two
 * mappings is executable, wherever it is (XRACE_ADDR or its own place),
 * and where: 'F' the memfd, 'A' the anonymous page, 'N' neither, 'O'
 * both or anything unexpected.
 */
static int xprot_seen(unsigned long long *at)
{
	static char buf[1 << 20];
	size_t len = 0;
	if (lseek(xrace_maps, 0, SEEK_SET) != 0)
		return 'O';
	for (;;) {
		ssize_t r = read(xrace_maps, buf + len, sizeof buf - 1 - len);
		if (r <= 0)
			break;
		len += r;
	}
	buf[len] = 0;
	int seen = 'N';
	for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		unsigned long long start = 0, end = 0;
		char perms[8] = "";
		unsigned long inode = 0;
		int path = 0;
		if (sscanf(line, "%llx-%llx %7s %*s %*s %lu%n", &start, &end, perms, &inode, &path) < 4 || !path)
			continue;
		while (line[path] == ' ') /* not "%lu %n": that would skip the newline too */
			path++;
		if (start != XRACE_ADDR && start != XPROT_ANON && start != XPROT_MEMFD)
			continue;
		if (perms[2] != 'x')
			continue;
		int memfd = strncmp(line + path, "/memfd:kfv-race", 15) == 0;
		int anon = inode == 0 && (line[path] == '\n' || line[path] == 0);
		if (seen != 'N' || (!memfd && !anon))
			return 'O';
		seen = memfd ? 'F' : 'A';
		*at = start;
	}
	return seen;
}

static void run_race_mprotect(const char *name, long n)
{
	long nallowed = 0, nforbidden = 0, ndenied = 0, nother = 0, nempty = 0;
	int lasterr = 0;
	if (xrace_why[0]) {
		report(name, 0, "set up: %s", xrace_why);
		return;
	}
	long a = syscall(SYS_mmap, (long)XPROT_ANON, 4096L, (long)(PROT_READ | PROT_WRITE), (long)(MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE), -1L, 0L);
	long f = syscall(SYS_mmap, (long)XPROT_MEMFD, 4096L, (long)PROT_READ, (long)(MAP_SHARED | MAP_FIXED_NOREPLACE), (long)xrace_memfd, 0L);
	if (a != (long)XPROT_ANON || f != (long)XPROT_MEMFD) {
		report(name, 0, "map the race's pages at 0x%llx and 0x%llx: %s", XPROT_ANON, XPROT_MEMFD, strerror(errno));
		return;
	}
	atomic_store(&race_stop, 0);
	atomic_store(&xrace_park, 0);
	atomic_store(&xprot_moves, 0);
	pthread_t th;
	int e = pthread_create(&th, NULL, xprot_swapper, NULL);
	if (e) {
		report(name, 0, "pthread_create: %s", strerror(e));
		return;
	}
	for (long i = 0; i < n; i++) {
		long moves = atomic_load(&xprot_moves);
		if (syscall(SYS_mprotect, (long)XRACE_ADDR, 4096L, (long)(PROT_READ | PROT_EXEC)) != 0) {
			if (errno == ENOMEM) {
				/* Between two moves: not a call that was decided.
				 * Again once the swapper has moved on, so that a
				 * swapper kept off the CPU (a loaded host) does not
				 * turn every call into this. */
				nempty++;
				i--;
				while (atomic_load(&xprot_moves) == moves)
					sched_yield();
				if (nempty > 100 * n) {
					report(name, 0, "%ld calls found nothing mapped at 0x%llx: the swapper does not run", nempty, XRACE_ADDR);
					atomic_store(&race_stop, 1);
					pthread_join(th, NULL);
					return;
				}
				continue;
			}
			ndenied++;
			lasterr = errno;
			continue;
		}
		atomic_store(&xrace_park, 1);
		while (!atomic_load(&xrace_parked))
			sched_yield();
		unsigned long long at = 0;
		int seen = xprot_seen(&at);
		switch (seen) {
		case 'F': nforbidden++; break;
		case 'A': nallowed++; break;
		default: nother++;
		}
		if (at)
			syscall(SYS_mprotect, (long)at, 4096L, (long)(seen == 'A' ? PROT_READ | PROT_WRITE : PROT_READ));
		atomic_store(&xrace_park, 0);
		while (atomic_load(&xrace_parked))
			sched_yield();
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	syscall(SYS_munmap, (long)XRACE_ADDR, 4096L);
	syscall(SYS_munmap, (long)XPROT_ANON, 4096L);
	syscall(SYS_munmap, (long)XPROT_MEMFD, 4096L);
	char extra[64];
	snprintf(extra, sizeof extra, "other=%ld empty=%ld", nother, nempty);
	xrace_report(name, n, nallowed, nforbidden, ndenied, lasterr, extra);
}

/* p_race_exec: race-mmap runs here, in the trigger's thread; the -main
 * payloads are handed to QEMU's main thread (race_pending 7 and 8). */
static void p_race_exec(const char *name, const char *arg)
{
	char *end;
	long n = strtol(arg, &end, 10);
	if (!race_armed || *end || n <= 0) {
		report(name, 0, "want KFV_RACE_ALLOWED, KFV_RACE_FORBIDDEN=memfd and a positive count, got %s", arg);
		return;
	}
	if (!strcmp(name, "race-mmap")) {
		run_race_mmap(name, n);
		return;
	}
	atomic_store(&race_n, n);
	atomic_store(&race_pending, !strcmp(name, "race-mmap-main") ? 7 : 8);
	say("kfv-implant: %s handed to the main thread", name);
}

/*
 * io_uring payloads: uring-qemu submits on QEMU's own ring (the ring of
 * block/io_uring.c for the VM's aio=io_uring disk), uring-own on a ring
 * the payload makes with io_uring_setup. Each submits, in this order,
 * IORING_OP_SOCKET (AF_INET, SOCK_STREAM), IORING_OP_CONNECT (to the
 * test's listener; on the SOCKET's fd, or on a socket made by the main
 * thread when SOCKET failed) then IORING_OP_OPENAT (O_CREAT of the test's
 * marker), with raw SQEs (no liburing). After a connect it writes one
 * line on the socket; the socket fd is left open for the test to see.
 *
 * Argument: WHERE,MARKER,A.B.C.D:PORT. WHERE is "device" (the payload's
 * calls come from the thread that saw the trigger) or "main" (handed to
 * QEMU's main thread, which runs it from its next ppoll, as a payload
 * that hijacked a main-loop callback would). Both need KFV_IMPLANT_MAIN,
 * which cuts the main loop's waits to 20 ms so that it sees the job.
 *
 * QEMU's ring is QEMU's: its SQ tail is kept by QEMU's liburing (state
 * in QEMU's memory) and its completions are reaped by QEMU's main loop,
 * which takes every CQE's user_data for one of its requests. So the
 * payload (1) finds the ring's struct io_uring by wrapping liburing's
 * io_uring_submit, which block/io_uring.c calls for the boot-time reads
 * of the disk, and gets SQEs and submits through QEMU's own liburing
 * (io_uring_get_sqe, io_uring_submit: its tail stays right); (2) keeps
 * QEMU's main loop out meanwhile: from a device thread it holds the main
 * thread in the ppoll wrapper, before QEMU's poll, until done; (3) submits
 * only when the ring is idle (SQ and CQ empty: the guest does no I/O on
 * that disk after boot) and reaps its own CQE before QEMU can see it.
 *
 * Report: result=ok when the three operations succeeded, with
 *   ring=qemu|own fd=N thread=NAME socket=R connect=R openat=R
 * (R: the CQE's res, a negative errno on failure).
 */

#define URING_UDATA 0x6b66762d75726e67ULL /* "kfv-urng" */

struct uring {
	int fd;
	struct io_uring_params p;
	unsigned char *sq, *cq;
	size_t sq_sz, cq_sz, sqes_sz;
	struct io_uring_sqe *sqes;
};

static unsigned *ur_u32(unsigned char *base, unsigned off) { return (unsigned *)(base + off); }

static void uring_unmap(struct uring *u)
{
	if (u->sqes)
		munmap(u->sqes, u->sqes_sz);
	if (u->cq && u->cq != u->sq)
		munmap(u->cq, u->cq_sz);
	if (u->sq)
		munmap(u->sq, u->sq_sz);
	u->sq = u->cq = NULL;
	u->sqes = NULL;
}

/* uring_map maps ring fd with the layout of params p (as liburing does). */
static int uring_map(struct uring *u, int fd, const struct io_uring_params *p)
{
	memset(u, 0, sizeof *u);
	u->fd = fd;
	u->p = *p;
	u->sq_sz = p->sq_off.array + p->sq_entries * sizeof(unsigned);
	u->cq_sz = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
	if (p->features & IORING_FEAT_SINGLE_MMAP) {
		if (u->cq_sz > u->sq_sz)
			u->sq_sz = u->cq_sz;
		u->cq_sz = u->sq_sz;
	}
	void *m = mmap(NULL, u->sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
	if (m == MAP_FAILED)
		return -errno;
	u->sq = m;
	u->cq = u->sq;
	if (!(p->features & IORING_FEAT_SINGLE_MMAP)) {
		m = mmap(NULL, u->cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
		if (m == MAP_FAILED) {
			int e = -errno;
			uring_unmap(u);
			return e;
		}
		u->cq = m;
	}
	u->sqes_sz = p->sq_entries * sizeof(struct io_uring_sqe);
	m = mmap(NULL, u->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	if (m == MAP_FAILED) {
		int e = -errno;
		uring_unmap(u);
		return e;
	}
	u->sqes = m;
	return 0;
}

static unsigned sq_head(struct uring *u) { return __atomic_load_n(ur_u32(u->sq, u->p.sq_off.head), __ATOMIC_ACQUIRE); }
static unsigned sq_tail(struct uring *u) { return __atomic_load_n(ur_u32(u->sq, u->p.sq_off.tail), __ATOMIC_ACQUIRE); }
static unsigned cq_head(struct uring *u) { return __atomic_load_n(ur_u32(u->cq, u->p.cq_off.head), __ATOMIC_ACQUIRE); }
static unsigned cq_tail(struct uring *u) { return __atomic_load_n(ur_u32(u->cq, u->p.cq_off.tail), __ATOMIC_ACQUIRE); }

/* The next SQE of a ring the payload owns (it keeps the tail itself). */
static struct io_uring_sqe *own_sqe(struct uring *u)
{
	unsigned tail = sq_tail(u), idx = tail & *ur_u32(u->sq, u->p.sq_off.ring_mask);
	struct io_uring_sqe *sqe = &u->sqes[idx];
	memset(sqe, 0, sizeof *sqe);
	ur_u32(u->sq, u->p.sq_off.array)[idx] = idx;
	return sqe;
}

static void own_commit(struct uring *u)
{
	__atomic_store_n(ur_u32(u->sq, u->p.sq_off.tail), sq_tail(u) + 1, __ATOMIC_RELEASE);
}

/*
 * reap waits for the CQE of the one submitted SQE and consumes it. A CQE
 * that is not the payload's at the head (QEMU's) is left alone: -EBUSY.
 */
static int reap(struct uring *u, int *res)
{
	for (int i = 0; i < 500; i++) {
		unsigned head = cq_head(u);
		if (head != cq_tail(u)) {
			struct io_uring_cqe *c = (struct io_uring_cqe *)(u->cq + u->p.cq_off.cqes) +
						 (head & *ur_u32(u->cq, u->p.cq_off.ring_mask));
			if (c->user_data != URING_UDATA)
				return -EBUSY;
			*res = c->res;
			__atomic_store_n(ur_u32(u->cq, u->p.cq_off.head), head + 1, __ATOMIC_RELEASE);
			return 0;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		if (syscall(__NR_io_uring_enter, u->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0 && errno != EINTR) {
			int e = -errno;
			nanosleep(&ts, NULL);
			if (i > 10)
				return e;
		}
	}
	return -ETIMEDOUT;
}

/* QEMU's block ring, seen in io_uring_submit; its liburing functions. */
static void *_Atomic qemu_ring;
static struct io_uring_sqe *(*lib_get_sqe)(void *);
static int (*lib_submit)(void *);

int io_uring_submit(void *ring)
{
	static int (*next)(void *);
	if (!next)
		next = real("io_uring_submit");
	if (active && !atomic_load(&qemu_ring))
		atomic_store(&qemu_ring, ring);
	return next(ring);
}

/* The main thread's side of a device-thread payload. */
static atomic_int hold_req, hold_parked;
static atomic_int hold_sock = -1;
/* A job for the main thread. */
static atomic_int uring_job, uring_job_done;
static char uring_job_name[32], uring_job_arg[CMD_MAX];

#define URING_CANDS 8

struct uring_ctx {
	const char *name;
	int qemu;   /* on QEMU's ring */
	int device; /* from the trigger's thread */
	struct uring u; /* the ring submitted on */
	void *qr;       /* QEMU's struct io_uring */
	/* QEMU's io_uring fds, mapped, until the first submission shows
	 * which one is qr's. */
	struct uring cands[URING_CANDS];
	int ncands;
};

/* get_sqe returns an SQE to fill; submit1 submits it and reaps its CQE. */
static struct io_uring_sqe *get_sqe(struct uring_ctx *c)
{
	if (!c->qemu)
		return own_sqe(&c->u);
	struct io_uring_sqe *sqe = lib_get_sqe(c->qr);
	if (sqe)
		memset(sqe, 0, sizeof *sqe);
	return sqe;
}

static int submit1(struct uring_ctx *c, struct io_uring_sqe *sqe, int *res)
{
	sqe->user_data = URING_UDATA;
	int n;
	if (c->qemu) {
		unsigned before[URING_CANDS];
		for (int i = 0; i < c->ncands; i++)
			before[i] = sq_head(&c->cands[i]);
		n = lib_submit(c->qr);
		/* qr's ring is the one whose kernel SQ head moved. */
		for (int i = 0; i < c->ncands && !c->u.sq; i++)
			if (sq_head(&c->cands[i]) != before[i]) {
				c->u = c->cands[i];
				c->cands[i] = c->cands[--c->ncands];
			}
		if (!c->u.sq)
			return -ENODEV;
	} else {
		own_commit(&c->u);
		n = (int)syscall(__NR_io_uring_enter, c->u.fd, 1, 0, 0, NULL, 0);
		if (n < 0)
			n = -errno;
	}
	if (n != 1)
		return n < 0 ? n : -EIO;
	return reap(&c->u, res);
}

/*
 * find_qemu_ring maps QEMU's io_uring fds (found with readlink of
 * /proc/self/fd/N: no open) of QEMU's ring size, 128 entries and flags 0
 * in both QEMU versions, with the layout of a probe ring of that size,
 * which maps alike; the first submission tells which is qr's. It returns
 * when they are all idle.
 */
static int find_qemu_ring(struct uring_ctx *c, char *why, size_t whylen)
{
	c->qr = atomic_load(&qemu_ring);
	if (!c->qr) {
		snprintf(why, whylen, "QEMU's io_uring_submit was never called");
		return -1;
	}
	lib_get_sqe = real("io_uring_get_sqe");
	lib_submit = real("io_uring_submit");
	struct io_uring_params pp;
	memset(&pp, 0, sizeof pp);
	int probe = (int)syscall(__NR_io_uring_setup, 128, &pp);
	if (probe < 0) {
		snprintf(why, whylen, "probe io_uring_setup: %s", strerrorname_np(errno));
		return -1;
	}
	close(probe);
	for (int fd = 0; fd < 1024 && c->ncands < URING_CANDS; fd++) {
		char p[64], l[64];
		snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(p, l, sizeof l - 1);
		if (n <= 0)
			continue;
		l[n] = 0;
		if (strcmp(l, "anon_inode:[io_uring]") != 0)
			continue;
		struct uring *u = &c->cands[c->ncands];
		if (uring_map(u, fd, &pp) != 0)
			continue;
		if (*ur_u32(u->sq, pp.sq_off.ring_entries) != 128) {
			uring_unmap(u);
			continue;
		}
		c->ncands++;
	}
	if (!c->ncands) {
		snprintf(why, whylen, "no io_uring fd of QEMU's ring size");
		return -1;
	}
	/* Idle: nothing of QEMU's in flight or unreaped. */
	for (int i = 0; i < 200; i++) {
		int idle = 1;
		for (int k = 0; k < c->ncands; k++)
			idle = idle && sq_head(&c->cands[k]) == sq_tail(&c->cands[k]) &&
			       cq_head(&c->cands[k]) == cq_tail(&c->cands[k]);
		if (idle)
			return 0;
		usleep(10000);
	}
	snprintf(why, whylen, "QEMU's rings never idle");
	return -1;
}

static int parse_uring_arg(const char *arg, int *device, char *marker, size_t mlen, struct sockaddr_in *sa)
{
	const char *c1 = strchr(arg, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
	if (!c2 || (size_t)(c2 - c1 - 1) >= mlen)
		return -1;
	if (!strncmp(arg, "device,", 7))
		*device = 1;
	else if (!strncmp(arg, "main,", 5))
		*device = 0;
	else
		return -1;
	memcpy(marker, c1 + 1, c2 - c1 - 1);
	marker[c2 - c1 - 1] = 0;
	return parse_hostport(c2 + 1, sa);
}

static void run_uring(const char *name, const char *arg)
{
	struct uring_ctx c = {.name = name, .qemu = !strcmp(name, "uring-qemu")};
	char marker[CMD_MAX], why[256] = "", comm[16];
	struct sockaddr_in sa;
	thread_name(comm);
	if (parse_uring_arg(arg, &c.device, marker, sizeof marker, &sa)) {
		report(name, 0, "want device|main,MARKER,A.B.C.D:PORT, got %s", arg);
		return;
	}
	int fd;
	if (c.qemu) {
		fd = find_qemu_ring(&c, why, sizeof why);
	} else {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		fd = (int)syscall(__NR_io_uring_setup, 8, &p);
		if (fd < 0)
			snprintf(why, sizeof why, "io_uring_setup: %s", strerrorname_np(errno));
		else if (uring_map(&c.u, fd, &p) != 0) {
			snprintf(why, sizeof why, "mmap the ring: %s", strerrorname_np(errno));
			close(fd);
			fd = -1;
		}
	}
	if (fd < 0) {
		report(name, 0, "ring=%s thread=%s setup-failed %s", c.qemu ? "qemu" : "own", comm, why);
		return;
	}
	int rs = -EIO, rc = -EIO, ro = -EIO, e;
	struct io_uring_sqe *sqe = get_sqe(&c);
	if (!sqe)
		goto out;
	sqe->opcode = IORING_OP_SOCKET;
	sqe->fd = AF_INET;
	sqe->off = SOCK_STREAM | SOCK_CLOEXEC;
	if ((e = submit1(&c, sqe, &rs)) != 0)
		rs = e;
	int s = rs;
	if (s < 0)
		s = c.device ? atomic_load(&hold_sock) : socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (!(sqe = get_sqe(&c)))
		goto out;
	sqe->opcode = IORING_OP_CONNECT;
	sqe->fd = s;
	sqe->addr = (unsigned long)&sa;
	sqe->off = sizeof sa;
	if ((e = submit1(&c, sqe, &rc)) != 0)
		rc = e;
	if (rc == 0) {
		static const char line[] = "kfv-implant uring connect\n";
		ssize_t w = write(s, line, sizeof line - 1);
		(void)w;
	}
	if (!(sqe = get_sqe(&c)))
		goto out;
	sqe->opcode = IORING_OP_OPENAT;
	sqe->fd = AT_FDCWD;
	sqe->addr = (unsigned long)marker;
	sqe->len = 0600;
	sqe->open_flags = O_CREAT | O_WRONLY | O_CLOEXEC;
	if ((e = submit1(&c, sqe, &ro)) != 0)
		ro = e;
	if (ro >= 0)
		close(ro);
out:
	if (c.qemu)
		fd = c.u.sq ? c.u.fd : -1;
	else
		close(fd);
	uring_unmap(&c.u);
	for (int i = 0; i < c.ncands; i++)
		uring_unmap(&c.cands[i]);
	report(name, rs >= 0 && rc == 0 && ro >= 0, "ring=%s fd=%d thread=%s socket=%d connect=%d openat=%d",
	       c.qemu ? "qemu" : "own", fd, comm, rs, rc, ro);
}

static void p_uring(const char *name, const char *arg)
{
	if (!main_armed) {
		report(name, 0, "want KFV_IMPLANT_MAIN in QEMU's environment");
		return;
	}
	if (!strncmp(arg, "main,", 5)) {
		snprintf(uring_job_name, sizeof uring_job_name, "%s", name);
		snprintf(uring_job_arg, sizeof uring_job_arg, "%s", arg);
		atomic_store(&uring_job_done, 0);
		atomic_store(&uring_job, 1);
		say("kfv-implant: %s handed to the main thread", name);
		/* The guest's write completes after the payload has run, so
		 * that its report is out when the guest says it is done. */
		for (int i = 0; i < 500 && !atomic_load(&uring_job_done); i++)
			usleep(10000);
		return;
	}
	/* From this thread, with the main thread held in ppoll meanwhile. */
	atomic_store(&hold_req, 1);
	for (int i = 0; i < 500 && !atomic_load(&hold_parked); i++)
		usleep(10000);
	if (!atomic_load(&hold_parked)) {
		atomic_store(&hold_req, 0);
		report(name, 0, "the main thread never reached ppoll");
		return;
	}
	run_uring(name, arg);
	atomic_store(&hold_req, 0);
}

/* ------------------------------------------ reach: other VMs, other processes */

/*
 * The payloads below reach what belongs to another VM or another process
 * of QEMU's user (issue "QEMU reaches only its own VM's objects"). Each
 * leaves what it made open, so that the test sees it among QEMU's fds
 * while QEMU runs. Every one also runs from QEMU's main loop as
 * "main-NAME" (see hand_to_main).
 */

static int (*reach_ioctl)(int, unsigned long, ...);

/* raw_ioctl is the real ioctl, past this implant's wrapper: a VM made by
 * kvm-second-vm must not become the VM kvm-memslot uses. */
static int raw_ioctl(int fd, unsigned long req, unsigned long arg)
{
	if (!reach_ioctl)
		reach_ioctl = real("ioctl");
	return reach_ioctl(fd, req, arg);
}

/* fd_named returns QEMU's first fd whose /proc/self/fd link starts with
 * prefix (readlink: no open), or -1. */
static int fd_named(const char *prefix)
{
	for (int fd = 0; fd < 4096; fd++) {
		char p[64], l[128];
		snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(p, l, sizeof l - 1);
		if (n <= 0)
			continue;
		l[n] = 0;
		if (!strncmp(l, prefix, strlen(prefix)))
			return fd;
	}
	return -1;
}

/*
 * sigio_kill makes the kernel send SIGKILL to pid, without a kill call:
 * the read end of a pipe QEMU makes is owned by pid (F_SETOWN), its
 * signal is SIGKILL (F_SETSIG) and it signals its owner when it becomes
 * readable (O_ASYNC); one write does the rest. ex: the owner is set
 * with F_SETOWN_EX (F_OWNER_PID) instead. Returns 0 when every step was
 * accepted, else -1 with why.
 */
static int sigio_kill(pid_t pid, int ex, char *why, size_t whylen)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		snprintf(why, whylen, "pipe2: %s", strerrorname_np(errno));
		return -1;
	}
	const char *step = ex ? "F_SETOWN_EX" : "F_SETOWN";
	struct f_owner_ex owner = {.type = F_OWNER_PID, .pid = pid};
	int r = ex ? fcntl(p[0], F_SETOWN_EX, &owner) : fcntl(p[0], F_SETOWN, pid);
	if (r == 0) {
		step = "F_SETSIG";
		r = fcntl(p[0], F_SETSIG, SIGKILL);
	}
	if (r == 0) {
		step = "F_SETFL O_ASYNC";
		r = fcntl(p[0], F_SETFL, O_ASYNC | O_NONBLOCK);
	}
	if (r == 0) {
		step = "write";
		r = write(p[1], "k", 1) == 1 ? 0 : -1;
	}
	int e = errno;
	close(p[0]);
	close(p[1]);
	if (r != 0) {
		snprintf(why, whylen, "%s: %s", step, strerrorname_np(e));
		return -1;
	}
	snprintf(why, whylen, "%s %d, F_SETSIG SIGKILL, O_ASYNC, write: done", ex ? "F_SETOWN_EX" : "F_SETOWN", (int)pid);
	return 0;
}

/* sigio-kill: argument PID, or ex:PID for F_SETOWN_EX. */
static void p_sigio_kill(const char *name, const char *arg)
{
	int ex = !strncmp(arg, "ex:", 3);
	pid_t pid = (pid_t)atoi(ex ? arg + 3 : arg);
	char why[160];
	if (pid <= 1) {
		report(name, 0, "bad pid %s", arg);
		return;
	}
	int r = sigio_kill(pid, ex, why, sizeof why);
	report(name, r == 0, "%s", why);
}

/* sched-pin: argument PID:CPU; pins PID to CPU alone. */
static void p_sched_pin(const char *name, const char *arg)
{
	char *end;
	pid_t pid = (pid_t)strtol(arg, &end, 10);
	int cpu = *end == ':' ? atoi(end + 1) : -1;
	if (pid <= 1 || cpu < 0 || cpu >= CPU_SETSIZE) {
		report(name, 0, "bad argument %s (want PID:CPU)", arg);
		return;
	}
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(pid, sizeof set, &set) < 0) {
		report(name, 0, "sched_setaffinity(%d, {%d}): %s", (int)pid, cpu, strerrorname_np(errno));
		return;
	}
	report(name, 1, "sched_setaffinity(%d, {%d}) done", (int)pid, cpu);
}

/* renice: setpriority(PID, 19) and ioprio_set(PID, idle); ok when both took. */
static void p_renice(const char *name, const char *arg)
{
	pid_t pid = (pid_t)atoi(arg);
	if (pid <= 1) {
		report(name, 0, "bad pid %s", arg);
		return;
	}
	int pe = setpriority(PRIO_PROCESS, (id_t)pid, 19) == 0 ? 0 : errno;
	/* IOPRIO_WHO_PROCESS, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0) */
	int ie = syscall(SYS_ioprio_set, 1, pid, 3 << 13) == 0 ? 0 : errno;
	report(name, !pe && !ie, "setpriority(%d, 19)=%s ioprio_set(%d, idle)=%s", (int)pid, pe ? strerrorname_np(pe) : "0",
	       (int)pid, ie ? strerrorname_np(ie) : "0");
}

/*
 * limit-sched: prlimit64(PID, RLIMIT_NOFILE, 16) and
 * sched_setscheduler(PID, SCHED_IDLE): the neighbour's limits and
 * scheduling, which QEMU sets only for itself. ok when both took.
 */
static void p_limit_sched(const char *name, const char *arg)
{
	pid_t pid = (pid_t)atoi(arg);
	if (pid <= 1) {
		report(name, 0, "bad pid %s", arg);
		return;
	}
	struct rlimit rl = {16, 16};
	int le = prlimit(pid, RLIMIT_NOFILE, &rl, NULL) == 0 ? 0 : errno;
	struct sched_param sp = {0};
	int se = sched_setscheduler(pid, SCHED_IDLE, &sp) == 0 ? 0 : errno;
	report(name, !le && !se, "prlimit64(%d, NOFILE, 16)=%s sched_setscheduler(%d, IDLE)=%s", (int)pid,
	       le ? strerrorname_np(le) : "0", (int)pid, se ? strerrorname_np(se) : "0");
}

/* kvm-second-vm: KVM_CREATE_VM on QEMU's own /dev/kvm fd, after start-up. */
static void p_kvm_second_vm(const char *name)
{
	int kvm = fd_named("/dev/kvm");
	if (kvm < 0) {
		report(name, 0, "QEMU holds no /dev/kvm fd");
		return;
	}
	int vm = raw_ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		report(name, 0, "KVM_CREATE_VM on fd %d: %s", kvm, strerrorname_np(errno));
		return;
	}
	report(name, 1, "KVM_CREATE_VM on fd %d returned vm fd=%d", kvm, vm);
}

/* kvm-extra-vcpu: argument ID; KVM_CREATE_VCPU ID on QEMU's VM fd. */
static void p_kvm_extra_vcpu(const char *name, const char *arg)
{
	int vm = vm_fd >= 0 ? vm_fd : fd_named("anon_inode:kvm-vm");
	if (vm < 0) {
		report(name, 0, "QEMU holds no KVM VM fd (needs KVM)");
		return;
	}
	int id = atoi(arg);
	int vcpu = raw_ioctl(vm, KVM_CREATE_VCPU, (unsigned long)id);
	if (vcpu < 0) {
		report(name, 0, "KVM_CREATE_VCPU %d on vm fd %d: %s", id, vm, strerrorname_np(errno));
		return;
	}
	report(name, 1, "KVM_CREATE_VCPU %d on vm fd %d returned vcpu fd=%d", id, vm, vcpu);
}

/*
 * seccomp-listener: a filter of the payload's own, with a listener, that
 * notifies one syscall number nobody calls (400: none on x86_64) and
 * allows the rest. With such a listener, once kfv's is gone, a payload
 * answers its own notifications and can let through what kfv decided.
 */
static void p_seccomp_listener(const char *name)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 400, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (fd < 0) {
		report(name, 0, "seccomp(SET_MODE_FILTER, NEW_LISTENER) errno=%s", strerrorname_np(errno));
		return;
	}
	report(name, 1, "seccomp(SET_MODE_FILTER, NEW_LISTENER) returned listener fd=%ld", fd);
}

static void p_raw_inet(const char *name)
{
	int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
	if (s < 0) {
		report(name, 0, "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP): %s", strerrorname_np(errno));
		return;
	}
	report(name, 1, "raw inet socket fd=%d", s);
}

/* other-pty: argument a pty of another VM's console; writes a line there. */
static void p_other_pty(const char *name, const char *arg)
{
	int fd = open(arg, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		report(name, 0, "open %s: %s", arg, strerrorname_np(errno));
		return;
	}
	static const char line[] = "kfv-implant other-pty\n";
	ssize_t w = write(fd, line, sizeof line - 1);
	int e = errno;
	close(fd);
	if (w != (ssize_t)sizeof line - 1) {
		report(name, 0, "write %s: %s", arg, w < 0 ? strerrorname_np(e) : "short");
		return;
	}
	report(name, 1, "wrote a line to %s", arg);
}

/* tun-create: argument IFNAME; a tap link of that name, held by the fd. */
static void p_tun_create(const char *name, const char *arg)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		report(name, 0, "open /dev/net/tun: %s", strerrorname_np(errno));
		return;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", arg);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (raw_ioctl(fd, TUNSETIFF, (unsigned long)&ifr) < 0) {
		int e = errno;
		close(fd);
		report(name, 0, "TUNSETIFF %s: %s", arg, strerrorname_np(e));
		return;
	}
	report(name, 1, "TUNSETIFF made %s fd=%d", ifr.ifr_name, fd);
}

/* listen-unbound: listen on a socket never bound; the kernel picks a port. */
static void p_listen_unbound(const char *name)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		report(name, 0, "socket: %s", strerrorname_np(errno));
		return;
	}
	if (listen(s, 4) < 0) {
		int e = errno;
		close(s);
		report(name, 0, "listen: %s", strerrorname_np(e));
		return;
	}
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	if (getsockname(s, (struct sockaddr *)&sa, &len) < 0) {
		report(name, 0, "getsockname: %s", strerrorname_np(errno));
		return;
	}
	report(name, 1, "listening fd=%d port=%d", s, ntohs(sa.sin_port));
}

/*
 * monitor_peer finds a process on the other end of one of QEMU's unix
 * stream sockets (SO_PEERCRED): kfv's detached supervisor is the client
 * of the monitors it proxies, whose manager (libvirt) stays connected.
 * (kfv's own monitor is a socket pair made by the process that became
 * QEMU: its peer is QEMU itself.) It looks for up to 10 s, as a manager
 * may connect after the payload starts. 0 if none.
 */
static pid_t monitor_peer_now(void);

static pid_t monitor_peer(void)
{
	for (int try = 0; try < 100; try++) {
		pid_t pid = monitor_peer_now();
		if (pid)
			return pid;
		usleep(100000);
	}
	return 0;
}

static pid_t monitor_peer_now(void)
{
	pid_t self = getpid();
	for (int fd = 0; fd < 4096; fd++) {
		struct ucred uc;
		socklen_t len = sizeof uc;
		int type;
		socklen_t tl = sizeof type;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM)
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
			continue;
		if (uc.pid > 1 && uc.pid != self)
			return uc.pid;
	}
	return 0;
}

/*
 * supervisor-kill: argument PID, or "peer" for the peer of QEMU's monitor
 * socket (the emulator model's supervisor); SIGKILL by SIGIO, then by
 * kill(). ok when either was accepted.
 */
static void p_supervisor_kill(const char *name, const char *arg)
{
	pid_t pid = strcmp(arg, "peer") ? (pid_t)atoi(arg) : monitor_peer();
	if (pid <= 1) {
		report(name, 0, "no target (%s)", arg);
		return;
	}
	char why[160];
	int sr = sigio_kill(pid, 0, why, sizeof why);
	usleep(100000);
	int kr = kill(pid, SIGKILL);
	int ke = errno;
	report(name, sr == 0 || kr == 0, "target=%d sigio: %s; kill: %s", (int)pid, why, kr ? strerrorname_np(ke) : "sent");
}

/*
 * reach_payload runs the payloads of this section and bind-shell (whose
 * main-loop run is bind-other): base is the payload, name what it
 * reports as. 0 if base is none of them.
 */
/*
 * bypath: the by-path calls a profile might let continue in the kernel,
 * on files in the directory DIR (the argument, outside the VM's
 * resources) that the test made: mkdir DIR/made, rename DIR/a to
 * DIR/renamed, link DIR/t to DIR/linked, symlink DIR/sym, mknod the FIFO
 * DIR/fifo, truncate DIR/t. result=ok when any of them took effect.
 */
static void p_bypath(const char *name, const char *arg)
{
	char a[PATH_MAX], b[PATH_MAX], out[512];
	size_t n = 0;
	int done = 0;
#define BYPATH(what, call)                                                                  \
	do {                                                                                \
		int rc_ = (call);                                                           \
		done += rc_ == 0;                                                           \
		n += snprintf(out + n, sizeof out - n, "%s%s=%s", n ? " " : "", what, rc_ == 0 ? "ok" : strerror(errno)); \
	} while (0)
	snprintf(a, sizeof a, "%s/made", arg);
	BYPATH("mkdir", mkdir(a, 0700));
	snprintf(a, sizeof a, "%s/a", arg);
	snprintf(b, sizeof b, "%s/renamed", arg);
	BYPATH("rename", rename(a, b));
	snprintf(a, sizeof a, "%s/t", arg);
	snprintf(b, sizeof b, "%s/linked", arg);
	BYPATH("link", link(a, b));
	snprintf(b, sizeof b, "%s/sym", arg);
	BYPATH("symlink", symlink("t", b));
	snprintf(b, sizeof b, "%s/fifo", arg);
	BYPATH("mknod", mknod(b, S_IFIFO | 0600, 0));
	BYPATH("truncate", truncate(a, 0));
#undef BYPATH
	report(name, done > 0, "%s", out);
}

/*
 * deny-flood: argument N; 4 threads open /etc/shadow N/4 times each, as
 * fast as they can, closing what opens (the flood of calls a profile
 * denies, to bound kfv's events under it). result=ok when every open
 * returned.
 */
static atomic_long flood_ok, flood_failed;
static long flood_each;

static void *flood_opener(void *unused)
{
	(void)unused;
	for (long i = 0; i < flood_each; i++) {
		int fd = open("/etc/shadow", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			close(fd);
			atomic_fetch_add(&flood_ok, 1);
		} else {
			atomic_fetch_add(&flood_failed, 1);
		}
	}
	return NULL;
}

static void p_deny_flood(const char *name, const char *arg)
{
	enum { threads = 4 };
	flood_each = atol(arg) / threads;
	atomic_store(&flood_ok, 0);
	atomic_store(&flood_failed, 0);
	pthread_t th[threads];
	int made = 0;
	for (; made < threads; made++)
		if (pthread_create(&th[made], NULL, flood_opener, NULL) != 0)
			break;
	for (int i = 0; i < made; i++)
		pthread_join(th[i], NULL);
	long ok = atomic_load(&flood_ok), failed = atomic_load(&flood_failed);
	report(name, made == threads, "threads=%d opens=%ld ok=%ld failed=%ld", made, ok + failed, ok, failed);
}

/*
 * opath-reopen: an O_PATH fd of the file ARG (outside the VM's
 * resources), then an open for writing of /proc/self/fd/N, the magic
 * link that reaches the file with the access the reopen asks for; writes
 * "kfv-opath" at its end. Flags O_WRONLY|O_APPEND|O_NOCTTY, which the
 * wall test's profile lets continue in the kernel. result=ok when the
 * write went through.
 */
static void p_opath_reopen(const char *name, const char *arg)
{
	int pfd = open(arg, O_PATH | O_CLOEXEC);
	if (pfd < 0) {
		report(name, 0, "open %s O_PATH: errno=%s", arg, strerrorname_np(errno));
		return;
	}
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", pfd);
	int wfd = open(p, O_WRONLY | O_APPEND | O_NOCTTY);
	int e = errno;
	close(pfd);
	if (wfd < 0) {
		report(name, 0, "O_PATH fd %d, reopen %s for writing: errno=%s", pfd, p, strerrorname_np(e));
		return;
	}
	ssize_t n = write(wfd, "kfv-opath", 9);
	e = errno;
	close(wfd);
	report(name, n == 9, "reopened %s through %s, write: %s", arg, p, n == 9 ? "done" : strerrorname_np(e));
}

/*
 * cut-monitor: cuts kfv off its private monitor from inside QEMU, whatever
 * the monitor's form (a -qmp unix: socket kfv connected to, a socketpair
 * chardev): shutdown(SHUT_RDWR) of every connected AF_UNIX stream socket
 * of QEMU, the connections of all its monitors among them. result=ok when
 * one was shut down. Then, with an argument, the attack that follows the
 * cut: exec-shell of the argument, reported as NAME-exec.
 */
static void p_cut_monitor(const char *name, const char *arg)
{
	int n = 0;
	for (int fd = 3; fd < 4096; fd++) {
		int dom = 0, type = 0;
		socklen_t l = sizeof dom;
		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) || dom != AF_UNIX)
			continue;
		l = sizeof type;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) || type != SOCK_STREAM)
			continue;
		struct sockaddr_storage peer;
		socklen_t pl = sizeof peer;
		if (getpeername(fd, (struct sockaddr *)&peer, &pl))
			continue; /* a listener, or not connected */
		if (shutdown(fd, SHUT_RDWR) == 0)
			n++;
	}
	report(name, n > 0, "shut down %d connected unix stream sockets", n);
	if (*arg) {
		char ename[CMD_MAX + 8];
		snprintf(ename, sizeof ename, "%s-exec", name);
		p_exec_shell(ename, arg);
	}
}

/*
 * Payloads that need root (privdrop_attack_test.go): under a test profile
 * that lets their calls through, only QEMU's own credentials stand in the
 * way. root-mknod: argument a directory anyone may write to; makes a copy
 * of /dev/mem there (c 1:1).
 */
static void p_root_mknod(const char *name, const char *arg)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/mem", arg);
	if (mknod(p, S_IFCHR | 0600, makedev(1, 1)) < 0) {
		report(name, 0, "mknod %s c 1 1: errno=%s", p, strerrorname_np(errno));
		return;
	}
	report(name, 1, "made %s c 1 1", p);
}

/*
 * root-sysctl: argument a file under /proc/sys; writes its own value back
 * to it, through the legacy open(2), which the test profile lets through
 * the kernel filter (QEMU's own opens are openat, which kfv performs).
 */
static void p_root_sysctl(const char *name, const char *arg)
{
	char v[256];
	int fd = syscall(SYS_open, arg, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		report(name, 0, "open %s O_RDWR: errno=%s", arg, strerrorname_np(errno));
		return;
	}
	ssize_t n = read(fd, v, sizeof v);
	if (n <= 0 || lseek(fd, 0, SEEK_SET) < 0 || write(fd, v, n) != n) {
		report(name, 0, "rewrite %s: errno=%s", arg, strerrorname_np(errno));
		close(fd);
		return;
	}
	close(fd);
	report(name, 1, "wrote %s", arg);
}

/*
 * root-netlink: argument an IPv4 address; adds it to lo with an
 * RTM_NEWADDR on a route netlink socket, and reads the kernel's answer.
 */
static void p_root_netlink(const char *name, const char *arg)
{
	struct {
		struct nlmsghdr nh;
		struct ifaddrmsg ifa;
		struct rtattr rta;
		struct in_addr addr;
	} req = {
		.nh = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_NEWADDR,
		       .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, .nlmsg_seq = 1},
		.ifa = {.ifa_family = AF_INET, .ifa_prefixlen = 32, .ifa_index = 1 /* lo */},
		.rta = {.rta_len = RTA_LENGTH(sizeof(struct in_addr)), .rta_type = IFA_LOCAL},
	};
	if (inet_pton(AF_INET, arg, &req.addr) != 1) {
		report(name, 0, "bad address %s", arg);
		return;
	}
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0) {
		report(name, 0, "socket(AF_NETLINK, NETLINK_ROUTE): errno=%s", strerrorname_np(errno));
		return;
	}
	if (sendto(s, &req, sizeof req, 0, NULL, 0) != (ssize_t)sizeof req) {
		report(name, 0, "send RTM_NEWADDR: errno=%s", strerrorname_np(errno));
		close(s);
		return;
	}
	char buf[4096];
	ssize_t n = recv(s, buf, sizeof buf, 0);
	close(s);
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	if (n < (ssize_t)(sizeof *h + sizeof(struct nlmsgerr)) || h->nlmsg_type != NLMSG_ERROR) {
		report(name, 0, "no netlink answer (%zd bytes)", n);
		return;
	}
	int e = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
	if (e != 0) {
		report(name, 0, "RTM_NEWADDR %s on lo: errno=%s", arg, strerrorname_np(e));
		return;
	}
	report(name, 1, "added %s to lo", arg);
}

static int reach_payload(const char *base, const char *name, const char *arg)
{
	if (!strcmp(base, "bypath")) {
		p_bypath(name, arg);
		return 1;
	}
	if (!strcmp(base, "opath-reopen")) {
		p_opath_reopen(name, arg);
		return 1;
	}
	if (!strcmp(base, "deny-flood")) {
		p_deny_flood(name, arg);
		return 1;
	}
	if (!strcmp(base, "cut-monitor")) {
		p_cut_monitor(name, arg);
		return 1;
	}
	if (!strcmp(base, "sigio-kill"))
		p_sigio_kill(name, arg);
	else if (!strcmp(base, "sched-pin"))
		p_sched_pin(name, arg);
	else if (!strcmp(base, "renice"))
		p_renice(name, arg);
	else if (!strcmp(base, "limit-sched"))
		p_limit_sched(name, arg);
	else if (!strcmp(base, "kvm-second-vm"))
		p_kvm_second_vm(name);
	else if (!strcmp(base, "kvm-extra-vcpu"))
		p_kvm_extra_vcpu(name, arg);
	else if (!strcmp(base, "kvm-memslot-bss"))
		p_kvm_memslot(name, arg);
	else if (!strcmp(base, "seccomp-listener"))
		p_seccomp_listener(name);
	else if (!strcmp(base, "raw-inet"))
		p_raw_inet(name);
	else if (!strcmp(base, "other-disk"))
		p_other_disk(name, arg);
	else if (!strcmp(base, "other-pty"))
		p_other_pty(name, arg);
	else if (!strcmp(base, "tun-create"))
		p_tun_create(name, arg);
	else if (!strcmp(base, "listen-unbound"))
		p_listen_unbound(name);
	else if (!strcmp(base, "bind-shell"))
		p_bind_shell(name, arg);
	else if (!strcmp(base, "supervisor-kill"))
		p_supervisor_kill(name, arg);
	else if (!strcmp(base, "root-mknod"))
		p_root_mknod(name, arg);
	else if (!strcmp(base, "root-sysctl"))
		p_root_sysctl(name, arg);
	else if (!strcmp(base, "root-netlink"))
		p_root_netlink(name, arg);
	else
		return 0;
	return 1;
}

/*
 * main-NAME: payload NAME run by QEMU's main thread from its next ppoll,
 * as a payload that hijacked a main-loop callback would (the main loop
 * holds the widest rights of QEMU's threads). The trigger's thread hands
 * it over and waits, so that the guest's write or port output completes
 * after the payload has run. Needs KFV_IMPLANT_MAIN.
 */
static atomic_int main_job, main_job_done;
static char main_job_name[CMD_MAX], main_job_arg[CMD_MAX];

static void hand_to_main(const char *name, const char *arg)
{
	if (!main_armed) {
		report(name, 0, "want KFV_IMPLANT_MAIN in QEMU's environment");
		return;
	}
	snprintf(main_job_name, sizeof main_job_name, "%s", name);
	snprintf(main_job_arg, sizeof main_job_arg, "%s", arg);
	atomic_store(&main_job_done, 0);
	atomic_store(&main_job, 1);
	say("kfv-implant: %s handed to the main thread", name);
	for (int i = 0; i < 500 && !atomic_load(&main_job_done); i++)
		usleep(10000);
}

/* run_main_job runs in the main thread; its trigger line names it, so
 * that the test looks for the denials of this thread. */
static void run_main_job(void)
{
	char comm[16];
	thread_name(comm);
	say("kfv-implant: trigger payload=%s arg=%s tid=%d thread=%s", main_job_name, main_job_arg, (int)gettid(), comm);
	if (!reach_payload(main_job_name + 5, main_job_name, main_job_arg))
		report(main_job_name, 0, "no main-loop run of %s", main_job_name + 5);
	atomic_store(&main_job_done, 1);
}

/* main_loop_turn runs in QEMU's main thread, in ppoll before QEMU's poll. */
static void main_loop_turn(void)
{
	if (atomic_exchange(&main_job, 0))
		run_main_job();
	if (atomic_exchange(&fork_job, 0)) {
		p_fork_exec("fork-exec-main", fork_job_arg);
		atomic_store(&fork_job_done, 1);
	}
	if (atomic_exchange(&uring_job, 0)) {
		run_uring(uring_job_name, uring_job_arg);
		atomic_store(&uring_job_done, 1);
	}
	if (atomic_load(&hold_req)) {
		if (atomic_load(&hold_sock) < 0)
			atomic_store(&hold_sock, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
		atomic_store(&hold_parked, 1);
		while (atomic_load(&hold_req))
			usleep(1000);
		atomic_store(&hold_parked, 0);
	}
}

/*
 * ppoll is where QEMU's main loop waits (util/main-loop.c). The main
 * thread runs a race handed to it here; in a race test its wait is cut to
 * 20 ms, since nothing else wakes an idle main loop when a vCPU thread
 * hands it the job.
 */
int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo, const sigset_t *mask)
{
	static int (*next)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	static const struct timespec cap = {0, 20 * 1000 * 1000};
	if (!next)
		next = real("ppoll");
	if ((race_armed || main_armed) && gettid() == getpid()) {
		int mode = atomic_exchange(&race_pending, 0);
		if (mode)
			run_race(mode);
		if (main_armed)
			main_loop_turn();
		if (!tmo || tmo->tv_sec > 0 || tmo->tv_nsec > cap.tv_nsec)
			tmo = &cap;
	}
	return next(fds, nfds, tmo, mask);
}

/* --------------------------------------------------------------- dispatch */

static void run_payload(const char *name, const char *arg, int diskfd)
{
	/*
	 * The name is read with an open of /proc/thread-self/comm, not
	 * PR_GET_NAME, on purpose: it is the one file a device thread
	 * opens before any payload, and TestReactionHold counts on it
	 * (under kfv a vCPU thread's open is a behaviour finding).
	 */
	char comm[32] = "";
	int cf = open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC);
	if (cf >= 0) {
		ssize_t n = read(cf, comm, sizeof comm - 1);
		if (n > 0)
			comm[n - 1] = 0;
		close(cf);
	}
	say("kfv-implant: trigger payload=%s arg=%s tid=%d thread=%s", name, arg, (int)gettid(), comm);
	if (!strncmp(name, "main-", 5))
		hand_to_main(name, arg);
	else if (reach_payload(name, name, arg))
		;
	else if (!strcmp(name, "exec-shell"))
		p_exec_shell(name, arg);
	else if (!strcmp(name, "read-secret"))
		p_read_secret(name, arg, diskfd);
	else if (!strcmp(name, "connect-back"))
		p_connect_back(name, arg);
	else if (!strcmp(name, "renamed-connect"))
		p_renamed_connect(name, arg);
	else if (!strcmp(name, "raw-sniff"))
		p_raw_sniff(name);
	else if (!strcmp(name, "rwx"))
		p_rwx(name);
	else if (!strcmp(name, "text-patch"))
		p_text_patch(name);
	else if (!strcmp(name, "procmem-write"))
		p_procmem_write(name);
	else if (!strcmp(name, "kvm-memslot") || !strcmp(name, "kvm-memslot-bss"))
		p_kvm_memslot(name, arg);
	else if (!strcmp(name, "neighbor-signal"))
		p_neighbor_signal(name, arg);
	else if (!strcmp(name, "neighbor-peek"))
		p_neighbor_peek(name, arg);
	else if (!strcmp(name, "fork-exec"))
		p_fork_exec(name, arg);
	else if (!strcmp(name, "fork-exec-main"))
		p_fork_exec_main(name, arg);
	else if (!strncmp(name, "share-", 6))
		p_share_escape(name, arg, diskfd);
	else if (!strcmp(name, "host-mount"))
		p_host_mount(name, arg);
	else if (!strcmp(name, "bpf"))
		p_bpf(name);
	else if (!strcmp(name, "race-memslot") || !strcmp(name, "race-memslot-main"))
		p_race_memslot(name, arg, trigger_fd, run_of(trigger_fd));
	else if (!strcmp(name, "race-mmap") || !strcmp(name, "race-mmap-main") || !strcmp(name, "race-mprotect-main"))
		p_race_exec(name, arg);
	else if (!strncmp(name, "race-", 5))
		p_race(name, arg);
	else if (!strcmp(name, "uring-qemu") || !strcmp(name, "uring-own"))
		p_uring(name, arg);
	else
		report(name, 0, "unknown payload");
}

/*
 * parse_command splits buf (n bytes) as MAGIC NUL payload NUL arg NUL.
 * It returns 1 and the two fields when the command is complete.
 */
static int parse_command(const char *buf, size_t n, char *payload, char *arg, size_t cap)
{
	size_t m = sizeof MAGIC; /* with its NUL */
	if (n < m || memcmp(buf, MAGIC, m) != 0)
		return 0;
	const char *p = buf + m, *e = buf + n;
	const char *z1 = memchr(p, 0, e - p);
	if (!z1)
		return 0;
	const char *z2 = memchr(z1 + 1, 0, e - z1 - 1);
	if (!z2 || (size_t)(z1 - p) >= cap || (size_t)(z2 - z1 - 1) >= cap)
		return 0;
	memcpy(payload, p, z1 - p + 1);
	memcpy(arg, z1 + 1, z2 - z1);
	return 1;
}

static void block_trigger(int fd, const void *buf, size_t n)
{
	char payload[CMD_MAX], arg[CMD_MAX];
	if (!active || !buf || n < sizeof MAGIC || memcmp(buf, MAGIC, sizeof MAGIC) != 0)
		return;
	if (parse_command(buf, n, payload, arg, sizeof payload))
		run_payload(payload, arg, fd);
}

/* ------------------------------------------------- trigger 1: block writes */

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	block_trigger(fd, buf, n);
	return raw_pwrite(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*next)(int, const void *, size_t, off_t);
	if (!next)
		next = real("pwrite");
	block_trigger(fd, buf, n);
	return next(fd, buf, n, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	static ssize_t (*next)(int, const struct iovec *, int, off_t);
	if (!next)
		next = real("pwritev64");
	if (cnt > 0)
		block_trigger(fd, iov[0].iov_base, iov[0].iov_len);
	return next(fd, iov, cnt, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	static ssize_t (*next)(int, const struct iovec *, int, off_t);
	if (!next)
		next = real("pwritev");
	if (cnt > 0)
		block_trigger(fd, iov[0].iov_base, iov[0].iov_len);
	return next(fd, iov, cnt, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	static ssize_t (*next)(int, const struct iovec *, int, off_t, int);
	if (!next)
		next = real("pwritev2");
	if (cnt > 0)
		block_trigger(fd, iov[0].iov_base, iov[0].iov_len);
	return next(fd, iov, cnt, off, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	static ssize_t (*next)(int, const struct iovec *, int, off_t, int);
	if (!next)
		next = real("pwritev64v2");
	if (cnt > 0)
		block_trigger(fd, iov[0].iov_base, iov[0].iov_len);
	return next(fd, iov, cnt, off, flags);
}

/* ----------------------------------------------- trigger 2: vCPU port I/O */

static struct {
	int fd;
	struct kvm_run *run;
} vcpus[MAX_VCPUS];
static int nvcpus;

/* The command being received on the trigger port (one vCPU sends it). */
static char port_cmd[CMD_MAX * 2];
static size_t port_len;

static int is_vcpu_fd(int fd)
{
	char path[64], link[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n <= 0)
		return 0;
	link[n] = 0;
	return strncmp(link, "anon_inode:kvm-vcpu:", 20) == 0;
}

static void note_mmap(void *p, int fd)
{
	if (!active || p == MAP_FAILED || fd < 0 || !is_vcpu_fd(fd))
		return;
	int i = __atomic_fetch_add(&nvcpus, 1, __ATOMIC_SEQ_CST);
	if (i >= MAX_VCPUS)
		return;
	vcpus[i].fd = fd;
	__atomic_store_n(&vcpus[i].run, (struct kvm_run *)p, __ATOMIC_RELEASE);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static void *(*next)(void *, size_t, int, int, int, off_t);
	if (!next)
		next = real("mmap64");
	void *p = next(addr, len, prot, flags, fd, off);
	note_mmap(p, fd);
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static void *(*next)(void *, size_t, int, int, int, off_t);
	if (!next)
		next = real("mmap");
	void *p = next(addr, len, prot, flags, fd, off);
	note_mmap(p, fd);
	return p;
}

static struct kvm_run *run_of(int fd)
{
	int n = __atomic_load_n(&nvcpus, __ATOMIC_SEQ_CST);
	for (int i = 0; i < n && i < MAX_VCPUS; i++)
		if (vcpus[i].fd == fd)
			return __atomic_load_n(&vcpus[i].run, __ATOMIC_ACQUIRE);
	return NULL;
}

/* --------------------------------------------------------- race-memslot */

/*
 * race-memslot and race-memslot-main: the TOCTOU attack on a supervisor
 * that reads the struct kvm_userspace_memory_region of a
 * KVM_SET_USER_MEMORY_REGION, checks what backs its host range and lets
 * the call continue: the kernel copies the struct again. A swapper thread
 * keeps rewriting userspace_addr between a page of guest RAM (allowed: a
 * RAM block QEMU made before the guest ran, the page at GPA
 * MEMSLOT_ALLOWED_GPA, holding 'A') and a page of QEMU's own memory that
 * is not guest RAM (forbidden: anonymous memory mapped at the address
 * KFV_RACE_FORBIDDEN names, in hex, holding 'F'), while N calls add a slot
 * of one page at GPA MEMSLOT_GPA (outside the guest's 1 MiB of RAM) in a
 * slot number QEMU does not use, each followed by its deletion.
 *
 * What the slot maps is seen from the guest side: after each call that
 * succeeded, the vCPU thread that received the trigger runs a stub in the
 * guest (at GPA MEMSLOT_STUB) that reads the byte at MEMSLOT_GPA and
 * writes it to port MEMSLOT_PORT: 'F' is the forbidden page reached by
 * the guest, the race won. Afterwards the vCPU's registers are put back
 * and it runs on from where the trigger left it.
 *
 * race-memslot makes the calls from the vCPU thread itself (a vCPU thread
 * maps memory when the guest programs a BAR); race-memslot-main hands
 * them to QEMU's main thread (memory hot-plug, a manager's commands),
 * whose guest reads the vCPU thread makes on request. The report is
 * p_race's, with forbidden counting the slots the guest saw over the
 * forbidden page, and other=K the successful calls whose slot read
 * neither byte.
 */
#define MEMSLOT_GPA 0x100000ull
#define MEMSLOT_STUB 0x8000ull
#define MEMSLOT_ALLOWED_GPA 0x9000ull
#define MEMSLOT_PORT 0x5f1

static uint64_t guest_ram_hva; /* QEMU's slot at GPA 0, from its own ioctl */
static struct kvm_userspace_memory_region memslot_reg;
static uint64_t memslot_alt[2];
static int memslot_vcpu = -1;
static struct kvm_run *memslot_run;
static atomic_int memslot_req, memslot_res, memslot_done;

static void *memslot_swapper(void *arg)
{
	(void)arg;
	volatile __u64 *p = &memslot_reg.userspace_addr;
	while (!atomic_load_explicit(&race_stop, memory_order_relaxed)) {
		*p = memslot_alt[1];
		*p = memslot_alt[0];
	}
	return NULL;
}

/* memslot_setup checks what the race needs and fills the two pages. */
static int memslot_setup(const char *name)
{
	if (vm_fd < 0 || !guest_ram_hva) {
		report(name, 0, "no KVM VM fd or guest RAM slot seen (needs KVM and the port trigger)");
		return -1;
	}
	uint64_t forbidden = strtoull(getenv("KFV_RACE_FORBIDDEN"), NULL, 16);
	void *f = mmap((void *)(uintptr_t)forbidden, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (f == MAP_FAILED || (uint64_t)(uintptr_t)f != forbidden) {
		report(name, 0, "map the forbidden page at 0x%llx: %s", (unsigned long long)forbidden, strerror(errno));
		return -1;
	}
	memset(f, 'F', 4096);
	memset((char *)(uintptr_t)(guest_ram_hva + MEMSLOT_ALLOWED_GPA), 'A', 4096);
	static const unsigned char stub[] = {
		0xb8, 0xff, 0xff,                            /* mov ax, 0xffff */
		0x8e, 0xd8,                                  /* mov ds, ax */
		0xa0, 0x10, 0x00,                            /* mov al, [0x0010]: GPA 0x100000 */
		0xba, MEMSLOT_PORT & 0xff, MEMSLOT_PORT >> 8, /* mov dx, MEMSLOT_PORT */
		0xee,                                        /* out dx, al */
		0xf4,                                        /* hlt */
	};
	memcpy((char *)(uintptr_t)(guest_ram_hva + MEMSLOT_STUB), stub, sizeof stub);
	memslot_alt[0] = guest_ram_hva + MEMSLOT_ALLOWED_GPA;
	memslot_alt[1] = forbidden;
	int (*rioctl)(int, unsigned long, ...) = real("ioctl");
	int nr = rioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	if (nr <= 0)
		nr = 32;
	memslot_reg = (struct kvm_userspace_memory_region){
		.slot = (uint32_t)(nr - 2), /* kvm-memslot's is nr - 1 */
		.guest_phys_addr = MEMSLOT_GPA,
		.memory_size = 4096,
		.userspace_addr = memslot_alt[0],
	};
	return 0;
}

static struct kvm_regs memslot_saved_regs;
static struct kvm_sregs memslot_saved_sregs;

/* memslot_enter points the trigger's vCPU at the stub, in real mode at
 * segment 0; memslot_leave puts it back and lets it run on. */
static int memslot_enter(int fd)
{
	int (*rioctl)(int, unsigned long, ...) = real("ioctl");
	if (rioctl(fd, KVM_GET_REGS, &memslot_saved_regs) || rioctl(fd, KVM_GET_SREGS, &memslot_saved_sregs))
		return -1;
	struct kvm_sregs s = memslot_saved_sregs;
	s.cs.selector = 0;
	s.cs.base = 0;
	return rioctl(fd, KVM_SET_SREGS, &s);
}

static void memslot_leave(int fd)
{
	int (*rioctl)(int, unsigned long, ...) = real("ioctl");
	rioctl(fd, KVM_SET_SREGS, &memslot_saved_sregs);
	rioctl(fd, KVM_SET_REGS, &memslot_saved_regs);
	/* The vCPU makes its last exit again (the trigger's out, or what
	 * follows it) for QEMU to handle as its own. */
	rioctl(fd, KVM_RUN, 0);
}

/* memslot_peek runs the stub: the byte the guest reads at MEMSLOT_GPA,
 * 0x100 + exit reason when it does not get there. */
static int memslot_peek(int fd, struct kvm_run *run)
{
	int (*rioctl)(int, unsigned long, ...) = real("ioctl");
	struct kvm_regs r = memslot_saved_regs;
	r.rip = MEMSLOT_STUB;
	r.rflags = 2;
	if (rioctl(fd, KVM_SET_REGS, &r))
		return 0x200;
	for (int i = 0; i < 16; i++) {
		if (rioctl(fd, KVM_RUN, 0) && errno != EINTR && errno != EAGAIN)
			return 0x300;
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == MEMSLOT_PORT && run->io.direction == KVM_EXIT_IO_OUT)
			return ((unsigned char *)run)[run->io.data_offset];
		if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write) {
			memset(run->mmio.data, 0xff, sizeof run->mmio.data); /* nothing there */
			continue;
		}
		if (run->exit_reason == KVM_EXIT_INTR)
			continue;
		return 0x100 + (int)run->exit_reason;
	}
	return 0x400;
}

/* memslot_calls makes the n calls and counts; peek reads the slot. */
static void memslot_calls(const char *name, long n, int (*peek)(void))
{
	int (*rioctl)(int, unsigned long, ...) = real("ioctl");
	long nallowed = 0, nforbidden = 0, ndenied = 0, nother = 0;
	int lasterr = 0, lastother = 0;
	struct kvm_userspace_memory_region del = memslot_reg;
	del.memory_size = 0;
	del.userspace_addr = 0;
	atomic_store(&race_stop, 0);
	pthread_t th;
	int e = pthread_create(&th, NULL, memslot_swapper, NULL);
	if (e) {
		report(name, 0, "pthread_create: %s", strerror(e));
		return;
	}
	for (long i = 0; i < n; i++) {
		if (rioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &memslot_reg) != 0) {
			ndenied++;
			lasterr = errno;
			continue;
		}
		int b = peek();
		if (b == 'F')
			nforbidden++;
		else if (b == 'A')
			nallowed++;
		else
			nother++, lastother = b;
		if (rioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &del) != 0) {
			atomic_store(&race_stop, 1);
			pthread_join(th, NULL);
			report(name, 0, "delete slot %u: %s", del.slot, strerror(errno));
			return;
		}
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	char comm[16];
	thread_name(comm);
	report(name, nforbidden > 0, "tid=%d thread=%s attempts=%ld allowed=%ld forbidden=%ld denied=%ld errno=%s other=%ld lastother=%d",
	       (int)gettid(), comm, n, nallowed, nforbidden, ndenied, lasterr ? strerrorname_np(lasterr) : "0", nother, lastother);
}

static int memslot_peek_self(void) { return memslot_peek(memslot_vcpu, memslot_run); }

/* The main thread's peek: the vCPU thread makes it. */
static int memslot_peek_remote(void)
{
	atomic_store(&memslot_req, 1);
	while (atomic_load(&memslot_req))
		sched_yield(); /* two cores: the swapper spins too */
	return atomic_load(&memslot_res);
}

static void run_race_memslot_main(void)
{
	memslot_calls("race-memslot-main", atomic_load(&race_n), memslot_peek_remote);
	atomic_store(&memslot_done, 1);
}

static void p_race_memslot(const char *name, const char *arg, int fd, struct kvm_run *run)
{
	char *end;
	long n = strtol(arg, &end, 10);
	if (!race_armed || *end || n <= 0 || !run) {
		report(name, 0, "want KFV_RACE_ALLOWED, KFV_RACE_FORBIDDEN, a positive count and the vCPU trigger, got %s", arg);
		return;
	}
	if (memslot_setup(name) || memslot_enter(fd)) {
		if (errno)
			report(name, 0, "set up: %s", strerror(errno));
		return;
	}
	memslot_vcpu = fd;
	memslot_run = run;
	if (!strcmp(name, "race-memslot")) {
		memslot_calls(name, n, memslot_peek_self);
	} else {
		atomic_store(&memslot_done, 0);
		atomic_store(&race_n, n);
		atomic_store(&race_pending, 6);
		say("kfv-implant: %s handed to the main thread", name);
		while (!atomic_load(&memslot_done)) {
			if (atomic_load(&memslot_req)) {
				atomic_store(&memslot_res, memslot_peek(fd, run));
				atomic_store(&memslot_req, 0);
			} else {
				sched_yield();
			}
		}
	}
	memslot_leave(fd);
}

/* The vCPU fd whose exit carried the trigger's last byte. */
static int trigger_fd = -1;

static void port_trigger(int fd)
{
	struct kvm_run *run = run_of(fd);
	if (!run || run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT ||
	    run->io.port != TRIGGER_PORT)
		return;
	const unsigned char *data = (const unsigned char *)run + run->io.data_offset;
	size_t n = (size_t)run->io.size * run->io.count;
	for (size_t i = 0; i < n; i++) {
		if (port_len >= sizeof port_cmd)
			port_len = 0; /* garbage: start again */
		port_cmd[port_len++] = (char)data[i];
		char payload[CMD_MAX], arg[CMD_MAX];
		if (data[i] == 0 && parse_command(port_cmd, port_len, payload, arg, sizeof payload)) {
			port_len = 0;
			trigger_fd = fd;
			run_payload(payload, arg, -1);
		}
	}
}

int ioctl(int fd, unsigned long req, ...)
{
	static int (*next)(int, unsigned long, ...);
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (!next)
		next = real("ioctl");
	int r = next(fd, req, arg);
	if (!active)
		return r;
	if (req == KVM_CREATE_VM && r >= 0)
		vm_fd = r;
	else if (req == KVM_SET_USER_MEMORY_REGION && r == 0) {
		const struct kvm_userspace_memory_region *m = arg;
		if (m->guest_phys_addr == 0 && m->memory_size >= 0x10000 && !guest_ram_hva)
			guest_ram_hva = m->userspace_addr; /* low RAM, for race-memslot */
	}
	else if (req == KVM_RUN && r == 0)
		port_trigger(fd);
	return r;
}
