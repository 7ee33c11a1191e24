"""The floor of any event-loop server, for the echo benchmark: the book's reply from an
`add_reader` callback on uvloop, one datagram per wake-up, with no events, counters or checks.

  python bench/loop_server.py PORT SECONDS

Binds 127.0.0.1:PORT (0 = any free port), prints the port, answers every datagram with
'Your data was N bytes long', and exits after SECONDS (or on SIGTERM).
"""

import asyncio
import signal
import socket
import sys

import uvloop

MAX_BYTES = 65535


async def serve(port: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    print(sock.getsockname()[1], flush=True)

    def readable() -> None:
        try:
            data, address = sock.recvfrom(MAX_BYTES)
        except BlockingIOError:
            return
        sock.sendto(f"Your data was {len(data)} bytes long".encode("ascii"), address)

    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), readable)
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, done.set_result, None)
    try:
        await asyncio.wait_for(done, seconds)
    except TimeoutError:
        pass


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), float(sys.argv[2])))
