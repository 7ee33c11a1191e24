"""The destination policy: where workers may send.

For now it guards the limited broadcast address 255.255.255.255 (the book's `<broadcast>`),
which reaches every host on every LAN the machine is attached to: it is refused unless the
operator starts udplab with --allow-limited-broadcast.
"""

from dataclasses import dataclass

from webapp.engine.errors import Refused

LIMITED_BROADCAST = "255.255.255.255"
SENDING_KINDS = frozenset({"client", "spoofer", "stream", "broadcast", "mtu-probe"})


@dataclass(frozen=True)
class Policy:
    """What the operator allows."""

    allow_limited_broadcast: bool = False

    def check(self, kind: str, address: str) -> None:
        """Raise `Refused` (403) if a worker of `kind` may not send to `address`."""
        if kind in SENDING_KINDS and address == LIMITED_BROADCAST \
                and not self.allow_limited_broadcast:
            raise Refused(
                "Sending to 255.255.255.255 (the book's <broadcast>) is refused: it reaches "
                "every host on every LAN this machine is attached to. Use a subnet's "
                "broadcast address such as 127.255.255.255, or start udplab with "
                "--allow-limited-broadcast",
                field="host",
            )
