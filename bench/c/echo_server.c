/* A plain C UDP server for the echo benchmark: it answers every datagram with the book's
 * reply, "Your data was N bytes long" (like listing 2-1's server, without printing).
 *
 *   echo_server PORT SECONDS     binds 127.0.0.1:PORT (0 = any free port), prints the port,
 *                                and exits after SECONDS (a bound on its life) or on SIGTERM.
 * Loopback only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PORT SECONDS\n", argv[0]); return 2; }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    alarm((unsigned)atoi(argv[2]));  /* SIGALRM's default action ends the process */
    static char buf[65536];
    char reply[64];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) continue;
        int m = snprintf(reply, sizeof reply, "Your data was %zd bytes long", n);
        sendto(fd, reply, (size_t)m, 0, (struct sockaddr *)&peer, plen);
    }
}
