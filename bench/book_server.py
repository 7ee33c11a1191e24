"""The book's plain blocking UDP server (listing 2-1's `server()`), for the echo benchmark.

  python bench/book_server.py PORT SECONDS

Binds 127.0.0.1:PORT (0 = any free port), prints the port, and answers every datagram with
'Your data was N bytes long', exactly as the book's loop does, minus its print() per request
(which would only slow it down). Exits after SECONDS (SIGALRM) or on SIGTERM.
"""

import signal
import socket
import sys

MAX_BYTES = 65535


def server(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print(sock.getsockname()[1], flush=True)
    while True:
        data, address = sock.recvfrom(MAX_BYTES)
        text = "Your data was {} bytes long".format(len(data))
        data = text.encode("ascii")
        sock.sendto(data, address)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.alarm(int(sys.argv[2]))  # a bound on its life: SIGALRM's default action ends it
    server(int(sys.argv[1]))
