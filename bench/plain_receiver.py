"""A plain blocking Python receiver, the reference for the ingest benchmark.

  python bench/plain_receiver.py RCVBUF SECONDS

Binds 127.0.0.1 on a free port (RCVBUF 0 = the default buffer), prints the port, then counts
datagrams with the book's `recvfrom(MAX_BYTES)` loop (no events, no output per datagram)
until 0.5 s pass without one or SECONDS after the first; prints
"count first_to_last_seconds".
"""

import socket
import sys
import time

MAX_BYTES = 65535


def main() -> None:
    rcvbuf, seconds = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    sock.settimeout(30)
    sock.recvfrom(MAX_BYTES)
    first = last = time.perf_counter()
    count = 1
    sock.settimeout(0.5)
    try:
        while last - first < seconds:
            sock.recvfrom(MAX_BYTES)
            count += 1
            if count & 255 == 0:
                last = time.perf_counter()
    except socket.timeout:
        pass
    last = time.perf_counter() if count & 255 else last
    print(count, max(1e-9, last - first - (0.5 if last - first < seconds else 0)))


if __name__ == "__main__":
    main()
