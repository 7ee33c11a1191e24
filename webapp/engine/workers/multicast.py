"""A sender to a multicast group: IP_MULTICAST_IF, IP_MULTICAST_TTL and IP_MULTICAST_LOOP,
then sendto the group, as the chapter's broadcast sender does to a broadcast address.

Each send event names the workers of this app that received the datagram (the group's
members that heard it), like a broadcast's `reached`.
"""

from webapp.engine import groups
from webapp.engine.events import format_address
from webapp.engine.specs import MulticastSpec
from webapp.engine.udp import Target, bind_error, describe_os_error, short
from webapp.engine.workers.broadcast import BroadcastWorker


class MulticastWorker(BroadcastWorker):
    """Sends datagrams to a multicast group."""

    kind = "multicast"
    spec: MulticastSpec
    default_message = "Multicast datagram!"

    def open(self) -> None:
        spec = self.spec
        self.interface = spec.interface or groups.default_interface(self.target.family,
                                                                    bool(spec.where))
        self.sock = self.target.socket()
        try:
            self.sock.setblocking(False)
            groups.set_sender(self.sock, self.interface, spec.ttl, spec.loop)
            if spec.bind:
                where = Target(self.target.family, (spec.bind, 0), spec.bind)
                try:
                    self.sock.bind(where.address)
                except OSError as exc:
                    raise bind_error(exc, where) from None
        except Exception:
            self.sock.close()
            self.sock = None
            raise
        self.destination = short(self.target.address)

    def failed(self, exc: OSError) -> str:
        message = describe_os_error(exc, self.destination)
        if exc.errno == 99 and ":" in self.destination[0]:  # EADDRNOTAVAIL
            message += (": this host's link-local address is still being checked for "
                        "duplicates (DAD, about 2 s after the link comes up): try again")
        if exc.errno == 101:  # ENETUNREACH
            message += (f": interface {self.interface} has no route for the group (Linux "
                        "gives loopback no IPv6 multicast route): send from a lab host, "
                        "such as h1, instead")
        return message

    def sent(self, text: str, who: str) -> str:
        spec = self.spec
        return (f"Multicast {text!r} to group {format_address(self.destination)} (TTL "
                f"{spec.ttl}, loop {'on' if spec.loop else 'off'}, via {self.interface}); "
                f"heard by {who}")
