"""Issue 16: pcapng exports of IPv6 traffic from real workers (a dual-stack server, a
link-local scope), read back by tshark with checksums checked. Traffic only on loopback."""

import asyncio
import subprocess

from history_helpers import tshark_fields
from waiting import ended, until
from webapp.engine import Supervisor
from webapp.engine.history import export


async def run_dual_stack() -> list[dict]:
    """A dual-stack server on ::, an IPv6 client and an IPv4 client; their events as JSON."""
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "name": "dual", "host": "::", "port": 0})
        port = server.local[1]
        six = await sup.start({"kind": "client", "name": "six", "host": "::1", "port": port,
                               "message": "over six"})
        four = await sup.start({"kind": "client", "name": "four", "host": "127.0.0.1",
                                "port": port, "message": "over four"})
        await ended(six)
        await ended(four)
        await until(lambda: server.counters["replied"] == 2, "both replies")
        await asyncio.sleep(0)
        return [{"id": n, "worker": w.id, "kind": w.kind,
                 "events": [e.to_dict() for e in w.history]}
                for n, w in enumerate((server, six, four), 1)]


def test_pcapng_of_a_dual_stack_server_reads_back_in_tshark(tmp_path, tshark):
    workers = asyncio.run(run_dual_stack())
    path = tmp_path / "six.pcapng"
    path.write_bytes(export.to_pcapng(workers))
    rows = tshark_fields(tshark, path, "ipv6.src", "ipv6.dst", "ip.src", "udp.payload",
                         "udp.length", "frame.comment")
    six = [r for r in rows if r[3] == b"over six".hex()]
    # the IPv6 client's datagram, as the client sent it and as the server received it
    assert len(six) == 2 and all(r[:2] == ["::1", "::1"] and not r[2] for r in six), six
    mapped = [r for r in rows if r[3] == b"over four".hex() and r[0]]
    # seen by the dual-stack server: IPv6 packets between IPv4-mapped addresses
    assert [r[:2] for r in mapped] == [["::ffff:127.0.0.1", "::ffff:127.0.0.1"]], rows
    assert "IPv4-mapped" in mapped[0][5]
    plain = [r for r in rows if r[3] == b"over four".hex() and r[2]]
    assert [r[2] for r in plain] == ["127.0.0.1"]  # the IPv4 client's own view
    # UDP checksums (mandatory over IPv6) are right: tshark checks them when asked (1 = good)
    checked = subprocess.run([tshark, "-r", str(path), "-o", "udp.check_checksum:TRUE", "-T",
                              "fields", "-e", "udp.checksum.status"],
                             capture_output=True, text=True, timeout=30, check=True)
    assert checked.stdout.split() == ["1"] * len(rows), checked.stdout
