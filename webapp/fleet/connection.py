"""A NATS connection with the fleet's credentials, for the agent and the dashboard alike."""

import asyncio
import ssl
from typing import Any, Callable

import nats

from webapp.fleet.config import Creds, FleetError


class Connection:
    """One NATS connection with the fleet's credentials, and what nats-server refused on it.

    `open()` raises `FleetError` at once when the credentials are refused or the server's
    TLS certificate is not trusted (rather than retrying for ever), waits for a server that is not up yet, and reconnects by itself
    afterwards; `say` gets one line per disconnect and reconnect."""

    def __init__(self, url: str, creds: Creds, *, name: str,
                 say: Callable[[str], None] = lambda line: None, tls_ca: str | None = None):
        self.url = url
        self.creds = creds
        self.name = name
        self.say = say
        self.tls_ca = tls_ca
        self.nc: nats.NATS | None = None
        self.refused: asyncio.Future | None = None
        self.closing = False
        self.on_reconnect: list[Callable[[], None]] = []  # called once connected again

    async def _error(self, exc: Exception) -> None:
        text = str(exc).lower()
        if "authorization violation" in text or "permissions violation" in text:
            self._refuse(str(exc).removeprefix("nats: ").strip("'"))
        elif isinstance(exc, ssl.SSLCertVerificationError):
            self._refuse(f"its TLS certificate is not trusted here: {exc.verify_message}; "
                         "pass --tls-ca with the certificate of the CA that signed it")
        elif not isinstance(exc, OSError):  # refused TCP connections: reconnecting says it
            self.say(f"NATS: {exc}")

    def _refuse(self, why: str) -> None:
        if not self.refused.done():
            self.refused.set_result(why)

    async def _disconnected(self) -> None:
        if not self.closing:
            self.say(f"lost the connection to nats-server at {self.url}; reconnecting")

    async def _reconnected(self) -> None:
        self.say(f"connected again to nats-server at {self.url}")
        for hook in self.on_reconnect:
            hook()

    def _tls(self) -> ssl.SSLContext:
        """Trust --tls-ca if given, else the certificate fleet init put in the credentials
        (a self-signed one, or a CA's leaf: partial chains are accepted), else the system's."""
        if self.tls_ca or not self.creds.tls_cert:
            return ssl.create_default_context(cafile=self.tls_ca)
        context = ssl.create_default_context(cadata=self.creds.tls_cert)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    async def open(self) -> nats.NATS:
        """Connect; `FleetError` if nats-server refuses these credentials."""
        self.refused = asyncio.get_running_loop().create_future()
        options: dict[str, Any] = {}
        if self.url.startswith("tls://") or self.tls_ca or self.creds.tls_cert:
            options["tls"] = self._tls()
        connecting = asyncio.ensure_future(nats.connect(
            self.url, user=self.creds.user, password=self.creds.password, name=self.name,
            error_cb=self._error, disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected, allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=1, connect_timeout=3, ping_interval=5,
            max_outstanding_pings=2, **options))
        try:
            await asyncio.wait([connecting, self.refused], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # given up on (a timeout): stop trying, too
            connecting.cancel()
            raise
        if self.refused.done():
            connecting.cancel()
            await asyncio.wait([connecting])
            if not connecting.cancelled() and connecting.exception() is None:
                await connecting.result().close()
            why = self.refused.result()
            if "TLS" in why:
                raise FleetError(f"cannot connect to nats-server at {self.url}: {why}")
            raise FleetError(
                f"nats-server at {self.url} refused the credentials of {self.creds.user!r} "
                f"({why}): check the .creds file, or run 'udplab fleet init' again and copy "
                "the new one")
        self.nc = connecting.result()
        return self.nc

    async def check_refused(self, wait: float = 0.3) -> None:
        """Raise `FleetError` if nats-server refused one of our subscriptions (it says so a
        moment after the subscription's round trip)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.refused), wait)
        except TimeoutError:
            return
        raise FleetError(f"nats-server refused: {self.refused.result()}. These credentials "
                         "belong to another machine: use this machine's own .creds file")

    async def close(self) -> None:
        """Close the connection, if open."""
        self.closing = True
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
