"""pcapng export: each datagram event becomes an IPv4 or IPv6 + UDP packet built with dpkt,
one capture interface per worker. Imported only when a capture is asked for."""

import io
import ipaddress
import sys
from typing import Any

import dpkt

from webapp.engine.history.datagrams import DATAGRAM_TYPES, payload_of

LINKTYPE_RAW = 101  # packets start with the IPv4 or IPv6 header


def _ip(host: str | None, other: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(host)
    except (ValueError, TypeError):  # unbound: the wildcard of the other side's family
        address = ipaddress.ip_address("::" if other is not None and ":" in other else "0.0.0.0")
    if address.is_unspecified:
        # A socket bound to every address talking to loopback uses the loopback address, as
        # the other side saw it; elsewhere the real one is unknown and the wildcard stays.
        try:
            peer = ipaddress.ip_address(other)
            if peer.version == 6 and peer.ipv4_mapped is not None:
                # A dual-stack socket's IPv4 peer: the datagram came to IPv4 loopback.
                if peer.ipv4_mapped.is_loopback:
                    return ipaddress.ip_address("::ffff:127.0.0.1")
            elif peer.is_loopback:
                return ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        except (ValueError, TypeError):
            pass
    return address


def packet_of(event: dict[str, Any]) -> tuple[bytes, int, bool] | None:
    """One datagram event as a raw IP packet: (bytes, its real length, payload exact?);
    None for an event that is no datagram."""
    outgoing = DATAGRAM_TYPES.get(event.get("type"))
    peer = event.get("peer")
    if outgoing is None or not peer or "size" not in event:
        return None
    local = event.get("local") or [None, 0]
    (src, sport), (dst, dport) = (local, peer) if outgoing else (peer, local)
    src_ip, dst_ip = _ip(src, dst), _ip(dst, src)
    if src_ip.version != dst_ip.version:  # an IPv4 peer of an IPv6 socket: mapped addresses
        src_ip, dst_ip = (ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a
                          for a in (src_ip, dst_ip))
    data, exact = payload_of(event)
    size = event["size"]
    udp = dpkt.udp.UDP(sport=int(sport or 0), dport=int(dport or 0), ulen=8 + size, data=data)
    if src_ip.version == 4:
        ip = dpkt.ip.IP(src=src_ip.packed, dst=dst_ip.packed, p=dpkt.ip.IP_PROTO_UDP, ttl=64,
                        data=udp)
        if exact:
            return bytes(ip), 28 + size, True
        # Cut payload: the headers still tell the real lengths, like a capture with a snaplen.
        udp.sum = 0xffff  # unknowable without the whole payload; never checked by default
        ip.len = 28 + size
        ip.sum = dpkt.in_cksum(ip.pack_hdr())
        return bytes(ip), 28 + size, False
    ip6 = dpkt.ip6.IP6(src=src_ip.packed, dst=dst_ip.packed, nxt=dpkt.ip.IP_PROTO_UDP, hlim=64,
                       plen=8 + size, data=udp)
    if not exact:
        udp.sum = 0xffff
    return bytes(ip6), 48 + size, exact


class _Block(dpkt.pcapng.EnhancedPacketBlockLE if sys.byteorder == "little"
             else dpkt.pcapng.EnhancedPacketBlock):
    """dpkt's packet block, keeping an original length larger than what was captured
    (dpkt's own always writes the two equal)."""

    def __bytes__(self) -> bytes:
        original = self.pkt_len
        data = self.pkt_data
        self.caplen = len(data)
        opts = self._do_pack_options()
        n = self.__hdr_len__ + dpkt.pcapng._align32b(self.caplen) + len(opts)
        self.len = self._len = n
        head = self._pack_hdr(self.type, n, self.iface_id, self.ts_high, self.ts_low,
                              self.caplen, max(original, self.caplen), n)
        return b"".join([head[:-4], dpkt.pcapng._padded(data), opts, head[-4:]])


def _fit(text: str, limit: int = 65535 - 3) -> str:
    """`text` cut to fit an option (its length is 16 bits), with '…' if it was cut: a history
    from before imports were checked can hold names and messages longer than that."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit - 3].decode("utf-8", "ignore") + "…"


def _option(code: int, text: str):
    kls = (dpkt.pcapng.PcapngOptionLE if sys.byteorder == "little"
           else dpkt.pcapng.PcapngOption)
    text = _fit(text)
    if code == dpkt.pcapng.PCAPNG_OPT_COMMENT:
        return kls(code=code, text=text)
    return kls(code=code, data=text.encode("utf-8"))


def _end():
    return _option(dpkt.pcapng.PCAPNG_OPT_ENDOFOPT, "")


def to_pcapng(workers: list[dict[str, Any]]) -> bytes:
    """Every datagram event of `workers` as a pcapng file: one interface per worker (named
    after it), packets in time order, each with the event's message as its comment."""
    little = sys.byteorder == "little"
    idb_kls = (dpkt.pcapng.InterfaceDescriptionBlockLE if little
               else dpkt.pcapng.InterfaceDescriptionBlock)
    shb_kls = dpkt.pcapng.SectionHeaderBlockLE if little else dpkt.pcapng.SectionHeaderBlock
    shb = shb_kls(opts=[_option(dpkt.pcapng.PCAPNG_OPT_SHB_USERAPPL, "UDP Lab"), _end()])
    idbs, packets = [], []
    for index, w in enumerate(workers):
        idbs.append(idb_kls(linktype=LINKTYPE_RAW, snaplen=262144, opts=[
            _option(dpkt.pcapng.PCAPNG_OPT_IF_NAME, w["worker"]),
            _option(dpkt.pcapng.PCAPNG_OPT_IF_DESCRIPTION,
                    f"UDP Lab {w['kind']} {w['worker']} (history {w['id']})"),
            _option(dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL, "\x06"),  # microseconds
            _end()]))
        for e in w["events"]:
            built = packet_of(e)
            if built is not None:
                packets.append((e["time"], e["seq"], index, e, *built))
    out = io.BytesIO()
    # dpkt needs at least one interface; an empty export is still a valid (empty) capture.
    writer = dpkt.pcapng.Writer(out, shb=shb, idb=idbs or [idb_kls(linktype=LINKTYPE_RAW)])
    for ts, _, index, e, data, length, exact in sorted(packets, key=lambda p: p[:2]):
        comment = f"{e['worker']} {e['type']}: {e['message']}"
        if not exact:
            comment += (f" (payload rebuilt from the shown text: {len(data) - (length - e['size'])}"
                        f" of {e['size']} bytes)")
        micros = round(ts * 1e6)
        writer.writepkt(_Block(iface_id=index, ts_high=micros >> 32, ts_low=micros & 0xFFFFFFFF,
                               pkt_len=length, pkt_data=data,
                               opts=[_option(dpkt.pcapng.PCAPNG_OPT_COMMENT, comment), _end()]))
    return out.getvalue()
