/* C baseline for bench/ioreq.py: the same traffic as devmodel's IOREQ/IORESP over a
 * socketpair(AF_UNIX, SOCK_STREAM) between two processes (fork).
 *
 *   ipc WINDOW SECONDS WARMUP        both sides, over a socketpair
 *   ipc WINDOW SECONDS WARMUP FD     client only, on an inherited socket to the real daemon
 *                                    (the handshake already done): `inb 0x92` ioreqs
 *
 * Each message is 48 bytes: the 16-byte header `<HHIII` (type, flags, payload_len, tag, chan)
 * and a 32-byte ioreq_t `<QQIIIHBB` (addr, data, count, size, vp_eport, pad0, bits, type).
 * The client keeps WINDOW requests outstanding (1 = strict ping-pong): whenever it reads k
 * complete responses it sends k new requests. The server reads whatever is there, serves every
 * complete request (a lookup of (space, port) in a small hash table of toy-UART registers,
 * data filled in, state = IORESP_READY) and answers them all with one write, as the daemon does.
 * Prints one JSON line: {"window": W, "seconds": s, "count": n, "rate": n/s}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 48
#define BUFSZ (1 << 18)

struct msg {
    uint16_t type, flags;
    uint32_t len, tag, chan;
    uint64_t addr, data;
    uint32_t count, size, eport;
    uint16_t pad0;
    uint8_t bits, iotype;
} __attribute__((packed));

_Static_assert(sizeof(struct msg) == MSG, "message is 48 bytes");

/* Toy UART at 0x3f8: eight registers in an open-addressing table keyed by (space, port). */
struct slot {
    uint32_t key;
    uint8_t used;
    uint8_t val;
};
static struct slot table[64];

static uint32_t hkey(uint32_t space, uint32_t port) { return space << 16 | port; }
static struct slot *lookup(uint32_t key) {
    uint32_t h = (key * 2654435761u) >> 26;
    for (;;) {
        struct slot *s = &table[h & 63];
        if (!s->used || s->key == key)
            return s;
        h++;
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            perror("write");
            exit(1);
        }
        c += w;
        n -= (size_t)w;
    }
}

static void server(int fd) {
    static unsigned char in[BUFSZ], out[BUFSZ];
    size_t have = 0;
    for (uint32_t p = 0; p < 8; p++) {
        struct slot *s = lookup(hkey(0, 0x3f8 + p));
        s->used = 1;
        s->key = hkey(0, 0x3f8 + p);
        s->val = (uint8_t)(0x60 + p);
    }
    for (;;) {
        ssize_t r = read(fd, in + have, sizeof in - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            perror("read");
            exit(1);
        }
        if (r == 0)
            return;
        have += (size_t)r;
        size_t n = have / MSG, o = 0;
        for (size_t i = 0; i < n; i++) {
            struct msg m;
            memcpy(&m, in + i * MSG, MSG);
            struct slot *s = lookup(hkey(m.iotype, (uint32_t)m.addr));
            if (s->used) {
                if (m.bits & 0x20)
                    m.data = s->val;
                else
                    s->val = (uint8_t)m.data;
            } else if (m.bits & 0x20) {
                m.data = 0xff;
            }
            m.type = 5;
            m.bits = (uint8_t)((m.bits & 0xf0) | 3);
            memcpy(out + o, &m, MSG);
            o += MSG;
        }
        if (o)
            write_all(fd, out, o);
        have -= n * MSG;
        if (have)
            memmove(in, in + n * MSG, have);
    }
}

static uint32_t next_tag = 1;
static int daemon_port = -1; /* >= 0: every request reads this port (client-only mode) */
static size_t make_reqs(unsigned char *buf, size_t k) {
    for (size_t i = 0; i < k; i++) {
        uint32_t tag = next_tag++;
        uint64_t port = daemon_port >= 0 ? (uint64_t)daemon_port : 0x3f8 + (tag & 7);
        struct msg m = {4, 0, 32, tag, 0, port, 0, 1, 1, 0, 0, 0x21, 0};
        memcpy(buf + i * MSG, &m, MSG);
    }
    return k * MSG;
}

static void client(int fd, long window, double seconds, double warmup) {
    static unsigned char in[BUFSZ], out[BUFSZ];
    size_t have = 0;
    long outstanding = window, count = 0;
    write_all(fd, out, make_reqs(out, (size_t)window));
    double t0 = now(), start = 0, end = 0;
    int measuring = 0;
    for (;;) {
        ssize_t r = read(fd, in + have, sizeof in - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            perror("read");
            exit(1);
        }
        if (r == 0) {
            fprintf(stderr, "server closed\n");
            exit(1);
        }
        have += (size_t)r;
        size_t k = have / MSG;
        for (size_t i = 0; i < k; i++) {
            if (in[i * MSG] != 5 || in[i * MSG + 46] != 0x23) {
                fprintf(stderr, "bad response\n");
                exit(1);
            }
        }
        have -= k * MSG;
        if (have)
            memmove(in, in + k * MSG, have);
        outstanding -= (long)k;
        if (measuring)
            count += (long)k;
        double t = now();
        if (!measuring && t - t0 >= warmup) {
            measuring = 1;
            start = t;
        } else if (measuring && t - start >= seconds) {
            end = t;
            break;
        }
        if (k)
            write_all(fd, out, make_reqs(out, k));
        outstanding += (long)k;
    }
    /* Drain what is still in flight, then let the server see EOF. */
    while (outstanding > 0) {
        ssize_t r = read(fd, in + have, sizeof in - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        outstanding -= (long)(have / MSG);
        have %= MSG;
    }
    if (daemon_port < 0)
        shutdown(fd, SHUT_WR);
    double el = end - start;
    printf("{\"window\": %ld, \"seconds\": %.6f, \"count\": %ld, \"rate\": %.1f}\n", window, el, count,
           count / el);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s WINDOW SECONDS WARMUP [FD]\n", argv[0]);
        return 2;
    }
    long window = atol(argv[1]);
    double seconds = atof(argv[2]), warmup = atof(argv[3]);
    if (window < 1 || window > (BUFSZ / MSG) / 2 || seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    if (argc == 5) {
        daemon_port = 0x92;
        client(atoi(argv[4]), window, seconds, warmup);
        return 0;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        server(sv[1]);
        _exit(0);
    }
    close(sv[1]);
    client(sv[0], window, seconds, warmup);
    close(sv[0]);
    int st;
    waitpid(pid, &st, 0);
    return 0;
}
