"""sendmmsg(2) through ctypes: many datagrams in one system call.

Python's socket module has no sendmmsg, and one `sock.send()` per datagram costs a system call
plus the interpreter's work around it each time. A `SendBatch` builds its `mmsghdr` and
`iovec` arrays once and is reused for every batch; ctypes releases the GIL for the length of
the call, so a sending thread leaves the event loop free meanwhile. Linux only (glibc or musl).
"""

import ctypes
import os


class IOVec(ctypes.Structure):
    """struct iovec."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    """struct msghdr (no address: the socket is connected; no ancillary data)."""

    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(IOVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    """struct mmsghdr: a message and, after the call, how many bytes of it were sent."""

    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


# CDLL (not PyDLL): the GIL is released during each call. use_errno: errno is saved
# right after the call, before another thread's call could change it.
_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int
_MSG_SIZE = ctypes.sizeof(MMsgHdr)


class SendBatch:
    """Up to `count` datagrams, each made of the same `prefix`, then `head_size` bytes of its
    own (written into `heads`, a preallocated bytearray: datagram i's are
    `heads[i*head_size:(i+1)*head_size]`), then the same `tail`. What all share is sent from
    one copy: a batch of big datagrams costs the memory of one, and what changes from one
    datagram to the next lies in one contiguous buffer, to be written in one go.

    Not thread-safe: one thread fills and sends a batch."""

    def __init__(self, count: int, head_size: int, tail: bytes = b"", prefix: bytes = b""):
        if count < 1 or head_size < 1:
            raise ValueError("a batch holds at least one datagram of at least one byte")
        self.count = count
        self.head_size = head_size
        self.size = len(prefix) + head_size + len(tail)  # bytes per datagram
        self.heads = bytearray(count * head_size)
        # The ctypes objects keep the buffers' addresses valid (a bytearray with an exported
        # buffer cannot be resized) for as long as this batch lives.
        self._heads = (ctypes.c_char * len(self.heads)).from_buffer(self.heads)
        self._shared = [ctypes.create_string_buffer(bytes(part), len(part))
                        for part in (prefix, tail)]
        heads_at = ctypes.addressof(self._heads)
        prefix_at, tail_at = (ctypes.addressof(part) for part in self._shared)
        parts = 1 + bool(prefix) + bool(tail)
        self._iov = (IOVec * (count * parts))()
        self._msgs = (MMsgHdr * count)()
        iov_at = ctypes.addressof(self._iov)
        for i in range(count):
            pieces = [(heads_at + i * head_size, head_size)]
            if prefix:
                pieces.insert(0, (prefix_at, len(prefix)))
            if tail:
                pieces.append((tail_at, len(tail)))
            for j, piece in enumerate(pieces):
                self._iov[i * parts + j] = IOVec(*piece)
            hdr = self._msgs[i].msg_hdr
            hdr.msg_iov = ctypes.cast(iov_at + i * parts * ctypes.sizeof(IOVec),
                                      ctypes.POINTER(IOVec))
            hdr.msg_iovlen = parts
        self._at = ctypes.addressof(self._msgs)

    def send(self, fd: int, first: int, end: int, flags: int = 0) -> int:
        """Send datagrams `first` up to (not including) `end` on the connected socket `fd`
        in one sendmmsg call; return how many went (from `first` on: fewer than asked when
        the kernel stopped part way, the rest to be sent again). Raises OSError when not even
        the first could be sent (EAGAIN with MSG_DONTWAIT and a full send buffer,
        ECONNREFUSED after an ICMP port unreachable, ...)."""
        if not 0 <= first < end <= self.count:
            raise ValueError(f"datagrams {first} to {end} of a batch of {self.count}")
        sent = _sendmmsg(fd, self._at + first * _MSG_SIZE, end - first, flags)
        if sent < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return sent
