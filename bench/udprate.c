/* The UDP rate benchmark's load (bench/udprate.py builds it with gcc at run time).
 *
 * Python's receivers could not keep up with the kernel (a recv per datagram),
 * so the benchmark measured them.  Here each side moves datagrams in batches,
 * a system call per BATCH datagrams, and counts into a shared file that the
 * benchmark reads between rounds without stopping anything:
 *
 *   udprate sink FD COUNTERS SLOT CPU
 *       recvmmsg on the (inherited) socket FD, a worker of the group, without
 *       waiting; a nap of NAP_US whenever nothing is queued; forever.
 *   udprate send HOST PORT FLOWS SEED COUNTERS SLOT CPU
 *       FLOWS client sockets, each bound to its own 127/8 address and port
 *       (a fixed 4-tuple: a long-lived flow) and connected to HOST:PORT; one
 *       sendmmsg of BATCH datagrams per flow in turn, forever.
 *
 * COUNTERS is a file of 64-byte slots (one cache line each, so no two
 * processes write the same line); SLOT is this process's.  CPU pins the
 * process (-1: not pinned).  Both run until killed: the counts are already
 * in the file.  Any setup failure is one line on stderr and exit status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64      /* datagrams per system call */
#define PAYLOAD 64    /* bytes per datagram sent */
#define BUFSIZE 2048  /* bytes per datagram received */
#define SLOT_SIZE 64
/* A sink that sleeps in recvmmsg is woken for nearly every datagram when it
 * keeps up (2.8 a call, measured), and the wake-ups, paid on the sender's
 * CPU, cost more than the selection it is there to measure.  Instead it
 * takes what is queued without waiting, then naps: about 44 datagrams a
 * call, no wake-up to pay, and the rate is the kernel's path (send, loopback,
 * lookup, selection, queue) with the receiving cheap beside it. */
#define NAP_US 200

/* One slot of the counters file; bench/udprate.py reads the same layout. */
struct slot {
	uint64_t datagrams;  /* sent or received */
	uint64_t calls;      /* sendmmsg or recvmmsg calls that moved at least one */
	uint64_t errors;     /* calls that failed (a sender's: the kernel refused a batch) */
	uint64_t ready;      /* 1 once set up and moving datagrams */
};

_Static_assert(sizeof(struct slot) <= SLOT_SIZE, "a slot fits its cache line");

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("udprate: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static long number(const char *text, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || *text == '\0' || *end != '\0')
		die("%s: not a number: %s", what, text);
	return v;
}

static struct slot *open_slot(const char *path, long index)
{
	int fd = open(path, O_RDWR);
	char *base;
	off_t size;

	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	size = lseek(fd, 0, SEEK_END);
	if (index < 0 || (index + 1) * SLOT_SIZE > size)
		die("%s: no slot %ld in %ld bytes", path, index, (long)size);
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		die("mmap %s: %s", path, strerror(errno));
	close(fd);
	return (struct slot *)(base + index * SLOT_SIZE);
}

static void pin(long cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("CPU %ld: %s", cpu, strerror(errno));
}

/* Single writer per slot: a relaxed store is enough for the reader's snapshot. */
static void count(uint64_t *field, uint64_t value)
{
	__atomic_store_n(field, value, __ATOMIC_RELAXED);
}

static void __attribute__((noreturn)) sink(int fd, struct slot *slot)
{
	static char bufs[BATCH][BUFSIZE];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	const struct timespec nap = { .tv_nsec = NAP_US * 1000 };
	uint64_t got = 0, calls = 0, errors = 0;
	int i, n;

	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = BUFSIZE;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	count(&slot->ready, 1);
	for (;;) {
		n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EAGAIN) {
				nanosleep(&nap, NULL);
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno == EBADF || errno == ENOTSOCK)
				die("fd %d: %s", fd, strerror(errno));
			count(&slot->errors, ++errors);
			continue;
		}
		count(&slot->datagrams, got += n);
		count(&slot->calls, ++calls);
	}
}

/* A random 127/8 source other than 127.0.0.0/24 and the broadcast-looking .255. */
static uint32_t source_address(void)
{
	return htonl(0x7f000000u | (uint32_t)(1 + random() % 255) << 16 | (uint32_t)(random() % 256) << 8 |
		     (uint32_t)(1 + random() % 254));
}

static int flow_socket(const struct sockaddr_in *dest)
{
	struct sockaddr_in src = { .sin_family = AF_INET };
	int tries, fd;

	for (tries = 0; tries < 100; tries++) {
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		if (fd < 0)
			die("socket: %s", strerror(errno));
		src.sin_addr.s_addr = source_address();
		src.sin_port = htons(20000 + random() % 40000);
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == 0) {
			if (connect(fd, (const struct sockaddr *)dest, sizeof(*dest)))
				die("connect: %s", strerror(errno));
			return fd;
		}
		close(fd);  /* that 4-tuple is taken: draw another */
	}
	die("no free source address and port after %d tries", tries);
}

static struct sockaddr_in destination(const char *host, long port)
{
	struct sockaddr_in dest = { .sin_family = AF_INET, .sin_port = htons(port) };

	if (inet_pton(AF_INET, host, &dest.sin_addr) != 1)
		die("not an IPv4 address: %s", host);
	if (port <= 0 || port > 65535)
		die("no such port: %ld", port);
	return dest;
}

static void __attribute__((noreturn)) send_flows(struct sockaddr_in dest, long flows, long seed, struct slot *slot)
{
	static char payload[PAYLOAD];
	struct mmsghdr msgs[BATCH];
	struct iovec iov = { .iov_base = payload, .iov_len = PAYLOAD };
	uint64_t sent = 0, calls = 0, errors = 0;
	int *fds;
	long f;
	int i, n;

	fds = calloc(flows, sizeof(*fds));
	if (!fds)
		die("out of memory");
	srandom(seed);
	for (f = 0; f < flows; f++)
		fds[f] = flow_socket(&dest);
	memset(payload, 'x', sizeof(payload));
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	count(&slot->ready, 1);
	for (;;) {
		for (f = 0; f < flows; f++) {
			n = sendmmsg(fds[f], msgs, BATCH, 0);
			if (n < 0) {
				if (errno != EINTR)
					count(&slot->errors, ++errors);
				continue;
			}
			count(&slot->datagrams, sent += n);
			count(&slot->calls, ++calls);
		}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in dest;
	long fd, flows, seed, slot, cpu;

	/* Every argument read before anything is opened: the first bad one is named. */
	if (argc == 6 && strcmp(argv[1], "sink") == 0) {
		fd = number(argv[2], "FD");
		slot = number(argv[4], "SLOT");
		cpu = number(argv[5], "CPU");
		pin(cpu);
		sink(fd, open_slot(argv[3], slot));
	}
	if (argc == 9 && strcmp(argv[1], "send") == 0) {
		dest = destination(argv[2], number(argv[3], "PORT"));
		flows = number(argv[4], "FLOWS");
		if (flows <= 0)
			die("FLOWS: at least one, not %ld", flows);
		seed = number(argv[5], "SEED");
		slot = number(argv[7], "SLOT");
		cpu = number(argv[8], "CPU");
		pin(cpu);
		send_flows(dest, flows, seed, open_slot(argv[6], slot));
	}
	fprintf(stderr, "usage: udprate sink FD COUNTERS SLOT CPU\n"
			"       udprate send HOST PORT FLOWS SEED COUNTERS SLOT CPU\n");
	return 2;
}
