/* A fast UDP sender for the ingest and page benchmarks: sendmmsg in batches on loopback.
 *
 *   blast PORT SIZE SECONDS RATE [COUNT]
 * sends SIZE-byte datagrams to 127.0.0.1:PORT for SECONDS or until COUNT are sent, as fast
 * as it can (RATE 0) or paced to RATE datagrams/s in 1 ms slices. Each payload starts with
 * "t=<unix time> n=<number> " so a receiver can time its arrival. Prints
 * "sent errors elapsed_seconds". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s PORT SIZE SECONDS RATE [COUNT]\n", argv[0]); return 2; }
    int size = atoi(argv[2]);
    double seconds = atof(argv[3]), rate = atof(argv[4]);
    long count = argc > 5 ? atol(argv[5]) : 1000000000L;
    if (size < 32 || size > 65507) size = 64;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)atoi(argv[1]));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) { perror("connect"); return 1; }
    static char bufs[BATCH][65536];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        memset(bufs[i], 'x', (size_t)size);
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = (size_t)size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long sent = 0, errors = 0;
    double start = mono(), end = start + seconds;
    while (sent < count) {
        double t = mono();
        if (t >= end) break;
        long due = count;
        if (rate > 0) {
            due = (long)((t - start) * rate) + 1;
            if (due > count) due = count;
            if (due <= sent) {
                struct timespec ts = {0, 200000};  /* 0.2 ms */
                nanosleep(&ts, NULL);
                continue;
            }
        }
        int n = (int)(due - sent < BATCH ? due - sent : BATCH);
        double w = wall();
        for (int i = 0; i < n; i++) {
            int k = snprintf(bufs[i], 40, "t=%.6f n=%ld ", w, sent + i);
            bufs[i][k] = 'x';  /* overwrite snprintf's NUL: the payload stays SIZE bytes */
        }
        int r = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (r < 0) { errors++; if (errors > 1000000) break; continue; }
        sent += r;
    }
    printf("%ld %ld %.6f\n", sent, errors, mono() - start);
    return 0;
}
