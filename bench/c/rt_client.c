/* The one client of the echo benchmark: blocking request/reply round trips on loopback.
 *
 *   rt_client PORT SECONDS SIZE TIMEOUT_MS [MAX]
 * sends SIZE-byte requests to 127.0.0.1:PORT one at a time, waits for each reply (up to
 * TIMEOUT_MS, then counts a timeout and sends the next), for SECONDS or MAX round trips,
 * and prints "round_trips timeouts elapsed_seconds". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s PORT SECONDS SIZE TIMEOUT_MS [MAX]\n", argv[0]); return 2; }
    double seconds = atof(argv[2]);
    int size = atoi(argv[3]), timeout_ms = atoi(argv[4]);
    long max = argc > 5 ? atol(argv[5]) : 100000000L;
    if (size < 1 || size > 65507) size = 64;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)atoi(argv[1]));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char *msg = malloc((size_t)size);
    memset(msg, 'x', (size_t)size);
    static char buf[65536];
    long done = 0, timeouts = 0;
    double start = now(), end = start + seconds, t = start;
    while (done + timeouts < max) {
        if (((done + timeouts) & 63) == 0 && (t = now()) >= end) break;
        if (sendto(fd, msg, (size_t)size, 0, (struct sockaddr *)&to, sizeof to) < 0) {
            timeouts++;
            continue;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) timeouts++; else done++;
    }
    printf("%ld %ld %.6f\n", done, timeouts, now() - start);
    return 0;
}
