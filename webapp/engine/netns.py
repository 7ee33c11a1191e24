"""Sockets inside Linux network namespaces.

Python 3.11 has no `os.setns`, so libc's `setns` is called through ctypes from a short-lived
thread: a socket created by a thread that has entered a namespace stays in that namespace,
and the main event loop can use it like any other.
"""

import ctypes
import ctypes.util
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def path(name: str) -> str:
    """The file that holds a named namespace (`ip netns add NAME` makes it)."""
    return os.path.join(NETNS_DIR, name)


def _inside(namespace: str, make):
    """`make()` called from a short-lived thread that has entered `namespace`."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            fd = os.open(path(namespace), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = make()
        except BaseException as exc:  # handed to the caller's thread below
            result["error"] = exc

    # The thread ends right after: its namespace change dies with it, the socket stays.
    thread = threading.Thread(target=run, name=f"netns {namespace}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


def socket_in(namespace: str, family: int, kind: int = socket.SOCK_DGRAM,
              proto: int = 0) -> socket.socket:
    """A new socket that lives in the named network namespace."""
    return _inside(namespace, lambda: socket.socket(family, kind, proto))


def interface_index(name: str, namespace: str | None = None) -> int | None:
    """The index of interface `name` (or of the index itself, `%2`) here or in `namespace`
    (an IPv6 scope), or None when there is no such interface."""
    def look() -> int | None:
        try:
            if name.isascii() and name.isdigit():
                socket.if_indextoname(int(name))  # OSError when no interface has it
                return int(name)
            return socket.if_nametoindex(name)
        except (OSError, OverflowError, ValueError):
            return None

    return look() if namespace is None else _inside(namespace, look)


def new_socket(family: int, kind: int = socket.SOCK_DGRAM, proto: int = 0,
               namespace: str | None = None) -> socket.socket:
    """A socket here, or in `namespace` when one is given."""
    if namespace is None:
        return socket.socket(family, kind, proto)
    return socket_in(namespace, family, kind, proto)
