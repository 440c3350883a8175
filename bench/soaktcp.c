/* The soak's steady TCP clients (bench/_soak_load.py builds it with gcc at run time).
 *
 *   soaktcp TIMEOUT_MS PORT:RATE:INFLIGHT [PORT:RATE:INFLIGHT ...]
 *
 * For each port of 127.0.0.1, RATE new connections a second (paced, open
 * loop, at most INFLIGHT at once: a stalled server does not make the client
 * pile up sockets), each from its own 127/8 source address: connect, send
 * one HTTP/1.1 request with `Connection: close`, read the answer to EOF, and
 * check it: status 200 and a non-empty body ending in a newline (nginx says
 * its worker's pid, a demo worker its name).  Every connection ends in one
 * outcome, counted per port:
 *
 *   ok        the answer checked out
 *   refused   connect() got ECONNREFUSED (no listener took the SYN)
 *   reset     ECONNRESET or EPIPE at any step (a listener or a worker died with it)
 *   timeout   not done within TIMEOUT_MS
 *   wrong     the answer ended (EOF) and did not check out
 *   other     any other error (its errno is printed)
 *
 * Output, one line each, flushed, times in CLOCK_MONOTONIC nanoseconds (the
 * clock Python's time.monotonic_ns reads):
 *   F <t> <port> <outcome> <errno>            each failed connection, as it ends
 *   S <t> <port> <ok> <refused> <reset> <timeout> <wrong> <other>   every second, running totals
 * Runs until killed (SIGTERM: a last S line per port, then exit 0).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_PORTS 8
#define MAX_CONNS 4096
#define ANSWER_MAX 512
#define TICK_NS 1000000000LL

enum outcome { OK, REFUSED, RESET, TIMEOUT, WRONG, OTHER, OUTCOMES };
static const char *NAMES[OUTCOMES] = {"ok", "refused", "reset", "timeout", "wrong", "other"};
static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n";

struct port {
    int port;
    double rate;
    int inflight_max, inflight;
    long long started;
    long long counts[OUTCOMES];
};

struct conn {
    int fd;  /* -1: free */
    struct port *port;
    long long deadline;
    int sent;
    int len;
    char answer[ANSWER_MAX];
};

static struct port ports[MAX_PORTS];
static int nports;
static struct conn conns[MAX_CONNS];
static volatile sig_atomic_t stopping;
static uint64_t rng = 88172645463325252ULL;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

static void totals(long long t) {
    for (int i = 0; i < nports; i++) {
        long long *c = ports[i].counts;
        printf("S %lld %d %lld %lld %lld %lld %lld %lld\n", t, ports[i].port, c[OK], c[REFUSED], c[RESET],
               c[TIMEOUT], c[WRONG], c[OTHER]);
    }
    fflush(stdout);
}

static void finish(int ep, struct conn *c, enum outcome o, int err) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->port->inflight--;
    c->port->counts[o]++;
    if (o != OK) {
        printf("F %lld %d %s %d\n", now_ns(), c->port->port, NAMES[o], err);
        fflush(stdout);
    }
}

static enum outcome of_errno(int err) {
    if (err == ECONNREFUSED) return REFUSED;
    if (err == ECONNRESET || err == EPIPE) return RESET;
    if (err == ETIMEDOUT) return TIMEOUT;
    return OTHER;
}

/* 200, and a body after the head that is not empty and ends in a newline. */
static int answer_ok(struct conn *c) {
    c->answer[c->len] = 0;
    if (strncmp(c->answer, "HTTP/1.1 200 ", 13) != 0 && strncmp(c->answer, "HTTP/1.0 200 ", 13) != 0) return 0;
    char *body = strstr(c->answer, "\r\n\r\n");
    if (!body) return 0;
    body += 4;
    size_t n = strlen(body);
    return n > 1 && body[n - 1] == '\n';
}

static void start(int ep, struct port *p, long long timeout_ns) {
    struct conn *c = NULL;
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd < 0) {
            c = &conns[i];
            break;
        }
    if (!c) return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    /* A source of its own in 127/8: no two connections share a 4-tuple, whatever TIME_WAIT holds. */
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000000u | (1 + next_random() % 0xfffffeu));
    bind(fd, (struct sockaddr *)&src, sizeof src);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(p->port)};
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    c->fd = fd;
    c->port = p;
    c->deadline = now_ns() + timeout_ns;
    c->sent = 0;
    c->len = 0;
    p->inflight++;
    p->started++;
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        finish(ep, c, of_errno(errno), errno);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void step(int ep, struct conn *c) {
    if (!c->sent) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            finish(ep, c, of_errno(err), err);
            return;
        }
        ssize_t n = send(c->fd, REQUEST, sizeof REQUEST - 1, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) return;
            finish(ep, c, of_errno(errno), errno);
            return;
        }
        c->sent = 1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    for (;;) {
        char scratch[512];
        int room = ANSWER_MAX - 1 - c->len;
        ssize_t n = room > 0 ? recv(c->fd, c->answer + c->len, room, 0) : recv(c->fd, scratch, sizeof scratch, 0);
        if (n > 0) {
            if (room > 0) c->len += n;
            continue;
        }
        if (n == 0) {
            finish(ep, c, answer_ok(c) ? OK : WRONG, 0);
        } else if (errno != EAGAIN) {
            finish(ep, c, of_errno(errno), errno);
        }
        return;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: soaktcp TIMEOUT_MS PORT:RATE:INFLIGHT ...\n");
        return 1;
    }
    long long timeout_ns = atoll(argv[1]) * 1000000LL;
    for (int i = 2; i < argc && nports < MAX_PORTS; i++) {
        struct port *p = &ports[nports++];
        if (sscanf(argv[i], "%d:%lf:%d", &p->port, &p->rate, &p->inflight_max) != 3) {
            fprintf(stderr, "soaktcp: bad PORT:RATE:INFLIGHT %s\n", argv[i]);
            return 1;
        }
    }
    rng ^= (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    long long began = now_ns(), next_tick = began + TICK_NS;
    struct epoll_event events[256];
    while (!stopping) {
        long long t = now_ns();
        for (int i = 0; i < nports; i++) {
            struct port *p = &ports[i];
            long long due = (long long)(p->rate * (double)(t - began) / 1e9);
            /* Behind by more than a second (a stall of this process): start afresh, no burst. */
            if (due - p->started > (long long)p->rate) p->started = due - (long long)p->rate;
            while (p->started < due && p->inflight < p->inflight_max) start(ep, p, timeout_ns);
        }
        int n = epoll_wait(ep, events, 256, 2);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->fd >= 0) step(ep, c);
        }
        t = now_ns();
        for (int i = 0; i < MAX_CONNS; i++)
            if (conns[i].fd >= 0 && t > conns[i].deadline) finish(ep, &conns[i], TIMEOUT, 0);
        if (t >= next_tick) {
            totals(t);
            next_tick += TICK_NS;
        }
    }
    totals(now_ns());
    return 0;
}
