"""Exports of the history (JSON Lines, CSV, pcapng) and the import of a JSON Lines export.

Every function takes workers as `HistoryStore.worker()` gives them (a dict with `events`), so
the same code serves one worker and a whole session.

JSON Lines: a `udplab-export` header line, then for each worker a `udplab-worker` line (its
spec, states and counters) followed by its events, one per line, with the same fields as the
API. pcapng: each datagram event becomes an IPv4 or IPv6 + UDP packet built with dpkt, one
capture interface per worker.
"""

import csv
import io
import ipaddress
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import dpkt

from webapp.engine.errors import BadSpec
from webapp.engine.history import WorkerRecord

FORMAT_VERSION = 1
# Datagram events and which way the datagram went: True when the worker sent it.
DATAGRAM_TYPES = {"sent": True, "received": False, "dropped": False, "reply": False,
                  "rejected": False}
CSV_COLUMNS = ("history_id", "worker", "seq", "time", "iso_time", "type", "message",
               "local_host", "local_port", "peer_host", "peer_port", "size", "text", "extra")
_BASE_FIELDS = {"seq", "time", "worker", "type", "message", "local", "peer", "size", "text"}
_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")
LINKTYPE_RAW = 101  # packets start with the IPv4 or IPv6 header


def _worker_header(w: dict[str, Any]) -> dict[str, Any]:
    head = {k: v for k, v in w.items() if k != "events"}
    return {"type": "udplab-worker", **head}


def jsonl(workers: Iterable[dict[str, Any]], session: dict[str, Any] | None = None
          ) -> Iterator[str]:
    """The export as JSON Lines, one line (with its newline) at a time."""
    yield json.dumps({"type": "udplab-export", "version": FORMAT_VERSION,
                      "exported": time.time(), "session": session}) + "\n"
    for w in workers:
        yield json.dumps(_worker_header(w)) + "\n"
        for event in w["events"]:
            yield json.dumps(event) + "\n"


def _address(a: Any) -> tuple[str, str]:
    return (str(a[0]), str(a[1])) if a else ("", "")


def to_csv(workers: Iterable[dict[str, Any]]) -> str:
    """Every event as a CSV row (columns `CSV_COLUMNS`); fields beyond the common ones go to
    `extra` as JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for w in workers:
        for e in w["events"]:
            extra = {k: v for k, v in e.items() if k not in _BASE_FIELDS}
            iso = datetime.fromtimestamp(e["time"], timezone.utc).isoformat(
                timespec="microseconds")
            writer.writerow([w["id"], e["worker"], e["seq"], repr(e["time"]), iso, e["type"],
                             e["message"], *_address(e.get("local")), *_address(e.get("peer")),
                             e.get("size", ""), e.get("text", ""),
                             json.dumps(extra) if extra else ""])
    return out.getvalue()


# --- pcapng ----------------------------------------------------------------------------

def payload_of(event: dict[str, Any]) -> tuple[bytes, bool]:
    """The datagram's bytes as far as the event tells them, and whether they are exact.

    Events keep `text`, the payload as `payload.show()` printed it: UTF-8, `\\xNN` for bytes
    that are not, cut with `…` past 200 characters. That is undone here; when the result is
    not `size` bytes long it is a best effort (a truncated capture)."""
    text, size = event.get("text", ""), event.get("size", 0)
    plain = text.encode("utf-8")
    if len(plain) == size:
        return plain, True
    cut = text.endswith("…")
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]),
                      (text[:-1] if cut else text).encode("utf-8"))
    if len(raw) == size:
        return raw, True
    return raw[:size], False


def _ip(host: str | None, other: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(host)
    except (ValueError, TypeError):  # unbound: the wildcard of the other side's family
        address = ipaddress.ip_address("::" if other is not None and ":" in other else "0.0.0.0")
    if address.is_unspecified:
        # A socket bound to every address talking to loopback uses the loopback address, as
        # the other side saw it; elsewhere the real one is unknown and the wildcard stays.
        try:
            if ipaddress.ip_address(other).is_loopback:
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


def _option(code: int, text: str):
    kls = (dpkt.pcapng.PcapngOptionLE if sys.byteorder == "little"
           else dpkt.pcapng.PcapngOption)
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


# --- import ----------------------------------------------------------------------------

def _refuse(line: int, why: str) -> BadSpec:
    return BadSpec(f"Line {line} of the import is not a UDP Lab JSON Lines export: {why}. "
                   "Import a file downloaded from the history's jsonl links", field="body")


def parse_jsonl(text: str) -> tuple[dict[str, Any] | None, list[WorkerRecord]]:
    """A JSON Lines export back into worker records (and its header's session, if any);
    `BadSpec` names the first bad line."""
    session, records = None, []
    implicit: dict[str, WorkerRecord] = {}
    current: WorkerRecord | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise _refuse(number, f"it is not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _refuse(number, "each line must be a JSON object with a 'type'")
        kind = item["type"]
        if kind == "udplab-export":
            if item.get("version", FORMAT_VERSION) > FORMAT_VERSION:
                raise _refuse(number, f"it is format version {item['version']}, newer than "
                              f"this UDP Lab reads ({FORMAT_VERSION})")
            session = item.get("session")
        elif kind == "udplab-worker":
            current = _record(number, item)
            records.append(current)
        else:
            event = _event(number, item)
            if current is None or current.worker != event["worker"]:
                current = implicit.get(event["worker"])
                if current is None:  # bare events: a worker known only by its id
                    current = implicit[event["worker"]] = WorkerRecord(
                        id=None, worker=event["worker"], kind="unknown", spec={},
                        state="finished", local=event.get("local"), target=None, counters={},
                        started=event["time"], ended=None)
                    records.append(current)
            current.events.append(event)
            current.ended = max(current.ended or 0, event["time"]) \
                if current.kind == "unknown" else current.ended
    if not records:
        raise BadSpec("The import holds no workers and no events: import a file downloaded "
                      "from the history's jsonl links", field="body")
    for record in records:
        record.events.sort(key=lambda e: e["seq"])
    return session, records


def _record(number: int, item: dict[str, Any]) -> WorkerRecord:
    try:
        states = [(float(s["time"]), str(s["state"])) for s in item.get("states", [])]
        return WorkerRecord(
            id=None, worker=str(item["worker"]), kind=str(item["kind"]),
            spec=dict(item.get("spec") or {}), state=str(item.get("state", "finished")),
            local=item.get("local"), target=item.get("target"),
            counters={str(k): int(v) for k, v in (item.get("counters") or {}).items()},
            started=float(item["started"]), ended=item.get("ended"), states=states,
            dropped=int(item.get("events_dropped", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(number, f"a worker line lacks or mangles {exc}") from None


def _event(number: int, item: dict[str, Any]) -> dict[str, Any]:
    for name, kinds in (("seq", int), ("time", (int, float)), ("worker", str),
                        ("message", str)):
        if not isinstance(item.get(name), kinds) or isinstance(item.get(name), bool):
            raise _refuse(number, f"an event needs '{name}'")
    return item
