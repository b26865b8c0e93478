// floor: the smallest seccomp user-notification supervisor, the floor
// kfv's own round trip is compared with. It runs PROGRAM under a filter
// that notifies getppid and allows every other call, and answers each
// notification with SECCOMP_USER_NOTIF_FLAG_CONTINUE, as kfv answers an
// allowed call: no decoding, no policy, no event.
//
//   floor SYNC SUPCPU PROGRAM [ARGS...]
//       SYNC 1 sets SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6+) on the
//       listener, 0 leaves the default wake-up. SUPCPU >= 0 pins the
//       answering thread to that CPU. PROGRAM pins itself if it wants to.
//
// The child loads the filter and passes the listener over a socketpair
// (SCM_RIGHTS), then execs PROGRAM: nothing it does after loading is
// notified but getppid, so it cannot deadlock. The answering thread
// blocks in SECCOMP_IOCTL_NOTIF_RECV; the main thread waits for the child
// and exits with its status.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Debian 12's headers predate Linux 6.6.
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static int load_filter(void) {
	struct sock_filter f[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

static int send_fd(int sock, int fd) {
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	char buf[CMSG_SPACE(sizeof(int))];
	memset(buf, 0, sizeof buf);
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock) {
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	char buf[CMSG_SPACE(sizeof(int))];
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
	if (recvmsg(sock, &msg, 0) != 1)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

struct answerer {
	int fd;
	int cpu;
};

static void *answer(void *arg) {
	struct answerer *a = arg;
	if (a->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(a->cpu, &set);
		if (sched_setaffinity(0, sizeof set, &set) != 0) {
			perror("floor: sched_setaffinity");
			exit(2);
		}
	}
	struct seccomp_notif req;
	struct seccomp_notif_resp resp;
	for (;;) {
		// The kernel rejects a RECV buffer that is not zeroed.
		memset(&req, 0, sizeof req);
		if (ioctl(a->fd, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
			if (errno == EINTR || errno == ENOENT)
				continue;
			perror("floor: SECCOMP_IOCTL_NOTIF_RECV");
			exit(2);
		}
		memset(&resp, 0, sizeof resp);
		resp.id = req.id;
		resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		if (ioctl(a->fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 && errno != ENOENT) {
			perror("floor: SECCOMP_IOCTL_NOTIF_SEND");
			exit(2);
		}
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 4) {
		fprintf(stderr, "usage: floor SYNC SUPCPU PROGRAM [ARGS...]\n");
		return 2;
	}
	int sync = atoi(argv[1]);
	int cpu = atoi(argv[2]);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		perror("floor: socketpair");
		return 2;
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("floor: fork");
		return 2;
	}
	if (pid == 0) {
		close(sv[0]);
		int fd = load_filter();
		if (fd < 0) {
			perror("floor: load filter");
			_exit(2);
		}
		if (send_fd(sv[1], fd) != 0) {
			perror("floor: send listener");
			_exit(2);
		}
		// The listener must not stay in the supervised program.
		close(fd);
		close(sv[1]);
		execvp(argv[3], argv + 3);
		perror("floor: exec");
		_exit(127);
	}
	close(sv[1]);
	struct answerer a = {.fd = recv_fd(sv[0]), .cpu = cpu};
	if (a.fd < 0) {
		perror("floor: receive listener");
		return 2;
	}
	close(sv[0]);
	if (sync) {
		__u64 flags = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
		if (ioctl(a.fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags) != 0) {
			perror("floor: SECCOMP_IOCTL_NOTIF_SET_FLAGS(SYNC_WAKE_UP)");
			return 3;
		}
	}
	pthread_t th;
	int e = pthread_create(&th, NULL, answer, &a);
	if (e) {
		fprintf(stderr, "floor: pthread_create: %s\n", strerror(e));
		return 2;
	}
	int st;
	if (waitpid(pid, &st, 0) != pid) {
		perror("floor: waitpid");
		return 2;
	}
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}
