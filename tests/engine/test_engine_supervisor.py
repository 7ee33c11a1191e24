"""The supervisor and its workers, with real UDP sockets on loopback only.

Servers bind port 0 so the OS picks a free port; clients use small backoff settings wherever
waiting is not what the test is about.
"""

import asyncio
import errno
import socket

import pytest

from waiting import ended, of_type, until
from webapp.engine import BadSpec, Conflict, Supervisor, UnknownWorker
from webapp.engine.backoff import Backoff
from webapp.engine.payload import show
from webapp.engine.udp import resolve, resolve_port
from webapp.engine.workers import WORKER_CLASSES, ServerWorker, Worker

LOOPBACK = "127.0.0.1"
FAST = {"timeout": 0.02, "give_up_after": 0.1}  # waits 0.02, 0.04, 0.08 s, then gives up






def types(worker: Worker) -> list[str]:
    return [event.type for event in worker.history]




async def ask(port: int, data: bytes, host: str = LOOPBACK) -> tuple[bytes, tuple]:
    """A plain blocking client, in a thread so the loop keeps serving: send, await one reply."""
    def exchange() -> tuple[bytes, tuple]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(data, (host, port))
            return sock.recvfrom(65535)
    return await asyncio.to_thread(exchange)


async def start_server(sup: Supervisor, **fields) -> ServerWorker:
    server = await sup.start({"kind": "server", "port": 0, **fields})
    await until(lambda: "listening" in types(server), "the server to listen")
    return server


# --- servers -------------------------------------------------------------------------


async def test_server_on_port_zero_gets_a_real_port():
    async with Supervisor() as sup:
        server = await start_server(sup)
        host, port = server.local
        assert host == LOOPBACK
        assert 0 < port <= 65535
        assert server.state == "running"
        assert server.id == "server-1"
        assert types(server) == ["listening"]
        assert server.history[0].message == f"Listening at ('127.0.0.1', {port})"
        assert server.history[0].local == (LOOPBACK, port)
        info = server.to_dict()
        assert info["local"] == [LOOPBACK, port]
        assert info["state"] == "running"
        assert info["spec"]["port"] == 0
        # the port really is taken by that socket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            with pytest.raises(OSError) as caught:
                other.bind((LOOPBACK, port))
        assert caught.value.errno == errno.EADDRINUSE


async def test_second_server_on_the_same_port_conflicts():
    async with Supervisor() as sup:
        first = await start_server(sup)
        port = first.local[1]
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "server", "port": port})
        error = caught.value
        assert error.status == 409
        assert error.field == "port"
        assert "already in use" in error.message
        assert str(port) in error.message
        assert list(sup.workers) == ["server-1"]  # the failed one was not kept
        # the first server still answers
        data, address = await ask(port, b"still there?")
        assert data == b"Your data was 12 bytes long"
        assert address == (LOOPBACK, port)
        assert first.state == "running"


async def test_bind_to_an_address_not_on_this_machine_conflicts():
    # 198.51.100.1 is TEST-NET-2 (RFC 5737), never a real host's address; bind() sends nothing
    async with Supervisor() as sup:
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "server", "host": "198.51.100.1", "port": 0})
    assert caught.value.field == "host"
    assert "198.51.100.1" in caught.value.message
    assert "not available" in caught.value.message


async def test_unknown_host_name_is_a_bad_spec():
    async with Supervisor() as sup:
        for kind in ("server", "client"):
            with pytest.raises(BadSpec) as caught:
                async with asyncio.timeout(10):
                    await sup.start({"kind": kind, "host": "no-such-host.invalid"})
            assert caught.value.field == "host"
            assert "no-such-host.invalid" in caught.value.message
        assert sup.workers == {}


async def test_unknown_service_name_is_a_bad_spec():
    async with Supervisor() as sup:
        with pytest.raises(BadSpec) as caught:
            await sup.start({"kind": "client", "port": "no-such-service"})
    assert caught.value.field == "port"
    assert "no-such-service" in caught.value.message


async def test_names_resolve_in_the_udp_tables():
    assert await resolve_port(1060) == 1060
    assert await resolve_port("domain") == 53
    assert await resolve_port("tftp") == 69  # listed for UDP only in /etc/services
    target = await resolve("localhost", "domain")
    assert target.family == socket.AF_INET  # IPv4 first when a name has both
    assert target.address == (LOOPBACK, 53)
    assert target.name == "localhost"
    for host in ("", "0.0.0.0"):
        assert (await resolve(host, 1060, passive=True)).address == ("0.0.0.0", 1060)


async def test_service_name_resolves_for_a_client():
    # `domain` is 53 in /etc/services; the one tiny datagram goes to loopback only
    async with Supervisor() as sup:
        client = await sup.start({"kind": "client", "port": "domain", "mode": "connected",
                                  "count": 1, "timeout": 0.01, "give_up_after": 0.01})
        assert client.target.address == (LOOPBACK, 53)
        assert client.spec.port == "domain"
        assert client.to_dict()["target"] == [LOOPBACK, 53]
        await ended(client)
        assert client.state == "finished"
        sent = of_type(client, "sent")
        assert sent and sent[0].peer == (LOOPBACK, 53)


async def test_ipv6_loopback():
    async with Supervisor() as sup:
        server = await start_server(sup, host="::1")
        assert server.local[0] == "::1"
        # issue 16: IPv6 written [addr]:port (Python's own tuple has flow info and scope)
        assert server.history[0].message == f"Listening at [::1]:{server.local[1]} (IPv6)"
        client = await sup.start({"kind": "client", "host": "::1", "port": server.local[1],
                                  "mode": "connected", "message": "over six"})
        await ended(client)
        assert client.history[-2].message == "The server says 'Your data was 8 bytes long'"
        assert client.counters["replies"] == 1


# --- clients -------------------------------------------------------------------------


async def test_promiscuous_client_gets_the_books_reply():
    async with Supervisor() as sup:
        server = await start_server(sup)
        port = server.local[1]
        client = await sup.start({"kind": "client", "port": port})  # the book's defaults
        await ended(client)
        assert client.state == "finished"
        assert types(client) == ["bound", "sent", "waiting", "reply", "stopped"]
        bound, sent, waiting, reply, stopped = client.history
        assert client.local[0] == "0.0.0.0"  # an unbound socket gets the wildcard address
        assert bound.message == f"The OS assigned me the address ('0.0.0.0', {client.local[1]})"
        assert sent.text.startswith("The time is ")  # the book's default message
        size = sent.size
        assert size == len(sent.text.encode())
        assert sent.peer == (LOOPBACK, port)
        assert waiting.message == "Waiting up to 0.1 seconds for a reply"
        assert (waiting.delay, waiting.attempt) == (0.1, 1)
        assert reply.message == (
            f"The server ('127.0.0.1', {port}) replied 'Your data was {size} bytes long'"
        )
        assert reply.text == f"Your data was {size} bytes long"
        assert reply.peer == (LOOPBACK, port)
        assert reply.expected is True
        assert stopped.state == "finished"
        assert client.counters == {"sent": 1, "replies": 1, "timeouts": 0, "retries": 0,
                                   "gave_up": 0, "rejected": 0, "unexpected": 0, "stale": 0,
                                   "errors": 0}
        assert client.sock is None  # a finished client closes its socket

        await until(lambda: server.counters["replied"] == 1, "the server's reply")
        assert types(server) == ["listening", "received", "sent"]
        _, received, answered = server.history
        assert received.message == (
            f"The client at ('127.0.0.1', {client.local[1]}) says {sent.text!r}"
        )
        assert received.peer == (LOOPBACK, client.local[1])
        assert received.size == size
        assert answered.text == reply.text
        assert server.counters == {"received": 1, "dropped": 0, "replied": 1, "bytes_in": size,
                                   "bytes_out": len(reply.text), "waiting": 0,
                                   "kernel_drops": 0, "held_back": 0, "errors": 0}
        # every event went through the bus, numbered in order
        seqs = [event.seq for event in sup.bus.recent]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_connected_client_gets_the_books_reply():
    async with Supervisor() as sup:
        server = await start_server(sup)
        port = server.local[1]
        client = await sup.start({"kind": "client", "port": port, "mode": "connected",
                                  "message": "Hello, world", "count": 3, "interval": 0})
        await ended(client)
        assert client.state == "finished"
        assert types(client) == ["bound"] + ["sent", "waiting", "reply"] * 3 + ["stopped"]
        bound = client.history[0]
        assert client.local[0] == LOOPBACK  # connect() picked the route's source address
        assert bound.message == f"Client socket name is ('127.0.0.1', {client.local[1]})"
        for reply in of_type(client, "reply"):
            assert reply.message == "The server says 'Your data was 12 bytes long'"
            assert reply.peer == (LOOPBACK, port)
        assert all(e.size == 12 and e.text == "Hello, world" for e in of_type(client, "sent"))
        assert client.counters["sent"] == client.counters["replies"] == 3
        await until(lambda: server.counters["replied"] == 3, "three replies")
        assert types(server) == ["listening"] + ["received", "sent"] * 3
        assert server.counters["bytes_in"] == 36
        assert all(e.message == f"The client at ('127.0.0.1', {client.local[1]}) says "
                                "'Hello, world'" for e in of_type(server, "received"))


async def test_echo_server():
    async with Supervisor() as sup:
        server = await start_server(sup, reply="echo")
        client = await sup.start({"kind": "client", "port": server.local[1],
                                  "message": "say it back"})
        await ended(client)
        reply = of_type(client, "reply")[0]
        assert reply.text == "say it back"
        assert reply.message == f"The server ('127.0.0.1', {server.local[1]}) replied 'say it back'"
        assert server.counters["bytes_out"] == len("say it back")


async def test_silent_server_makes_the_client_give_up_on_schedule():
    async with Supervisor() as sup:
        server = await start_server(sup, reply="none")
        loop = asyncio.get_running_loop()
        began = loop.time()
        client = await sup.start({"kind": "client", "port": server.local[1], **FAST})
        await ended(client)
        took = loop.time() - began
        expected = Backoff(0.02, 2.0, 0.1).delays()
        assert expected == pytest.approx([0.02, 0.04, 0.08])
        assert [e.delay for e in of_type(client, "waiting")] == pytest.approx(expected)
        assert [e.message for e in of_type(client, "waiting")] == [
            "Waiting up to 0.02 seconds for a reply",
            "Waiting up to 0.04 seconds for a reply",
            "Waiting up to 0.08 seconds for a reply",
        ]
        assert [e.attempt for e in of_type(client, "timeout")] == [1, 2, 3]
        assert types(client)[-2:] == ["gave-up", "stopped"]
        gave_up = client.history[-2]
        assert gave_up.message == "I think the server is down"
        assert gave_up.attempts == 3
        assert client.counters == {"sent": 3, "replies": 0, "timeouts": 3, "retries": 2,
                                   "gave_up": 1, "rejected": 0, "unexpected": 0, "stale": 0,
                                   "errors": 0}
        assert client.state == "finished"
        # each wait really lasted its delay
        assert took >= sum(expected) - 0.005
        waits = of_type(client, "waiting")
        timeouts = of_type(client, "timeout")
        for wait, timeout in zip(waits, timeouts, strict=True):
            assert timeout.time - wait.time >= wait.delay - 0.005
        await until(lambda: server.counters["received"] == 3, "three requests")
        assert server.counters["replied"] == 0


async def test_connected_client_to_a_closed_port_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]  # free once closed; nothing else binds it meanwhile
    async with Supervisor() as sup:
        client = await sup.start({"kind": "client", "port": port, "mode": "connected",
                                  "message": "anyone?", **FAST})
        await ended(client)
        errors = of_type(client, "error")
        assert errors, types(client)
        assert errors[0].errno == errno.ECONNREFUSED == 111
        assert "Connection refused" in errors[0].message
        assert "[Errno 111]" in errors[0].message
        assert client.counters["errors"] == len(errors)
        assert client.counters["replies"] == 0
        assert client.state == "finished"  # the network's errors are events, not a crash


async def test_lossy_server_drops_the_same_requests_on_every_run():
    async def run_once(seed: int) -> list[str]:
        async with Supervisor() as sup:
            server = await start_server(sup, drop_rate=0.5, seed=seed)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2)
                for n in range(20):
                    sock.sendto(f"request {n}".encode(), (LOOPBACK, server.local[1]))
                await until(lambda: server.counters["received"] == 20, "twenty requests")
            seen = [e for e in server.history if e.type in ("received", "dropped")]
            assert [e.text for e in seen] == [f"request {n}" for n in range(20)]
            for event in of_type(server, "dropped"):
                assert event.message.startswith("Pretending to drop packet from ('127.0.0.1', ")
            counters = server.counters
            assert counters["dropped"] + counters["replied"] == 20
            return [e.type for e in seen]

    first = await run_once(7)
    assert first == await run_once(7)
    assert 0 < first.count("dropped") < 20
    assert first != await run_once(8)


# --- the supervisor's bookkeeping ----------------------------------------------------


async def test_stop_closes_the_socket_and_frees_the_port():
    async with Supervisor() as sup:
        server = await start_server(sup)
        port = server.local[1]
        stopped = await sup.stop(server.id)
        assert stopped is server
        assert server.state == "stopped"
        assert server.sock is None
        assert server.ended is not None
        assert types(server) == ["listening", "stopped"]
        assert server.history[-1].state == "stopped"
        assert server.history[-1].message == "Server server-1 stopped"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind((LOOPBACK, port))  # at once: nothing holds it any more
        await sup.stop(server.id)  # idempotent: no second `stopped` event
        assert types(server) == ["listening", "stopped"]
        assert sup.get(server.id) is server  # stopped, not forgotten


async def test_stop_before_the_worker_ran_at_all():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        await sup.stop(server.id)  # its task never got a turn
        assert server.state == "stopped"
        assert server.sock is None
        assert types(server) == ["listening", "stopped"]  # bound in start(), then stopped


async def test_remove_forgets_the_worker():
    async with Supervisor() as sup:
        with sup.bus.subscribe() as sub:
            server = await start_server(sup)
            removed = await sup.remove(server.id)
            assert removed is server
            assert server.id not in sup.workers
            with pytest.raises(UnknownWorker):
                sup.get(server.id)
            events, _ = sub.drain()
        assert [e.type for e in events] == ["listening", "stopped", "removed"]
        assert events[-1].worker == "server-1"
        assert events[-1].message == "Server server-1 removed"
        assert server.sock is None


async def test_unknown_worker():
    async with Supervisor() as sup:
        with pytest.raises(UnknownWorker) as caught:
            sup.get("nobody")
        assert caught.value.status == 404
        assert "'nobody'" in caught.value.message
        for action in (sup.stop, sup.remove):
            with pytest.raises(UnknownWorker):
                await action("nobody")
        with pytest.raises(UnknownWorker):
            sup.events("nobody")


async def test_duplicate_name_conflicts():
    async with Supervisor() as sup:
        first = await start_server(sup, name="alpha")
        assert first.id == "alpha"
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "client", "name": "alpha"})
        assert caught.value.status == 409
        assert caught.value.field == "name"
        assert "'alpha'" in caught.value.message
        assert sup.workers == {"alpha": first}


async def test_generated_ids_skip_taken_names():
    async with Supervisor() as sup:
        named = await sup.start({"kind": "server", "port": 0, "name": "server-2"})
        one = await sup.start({"kind": "server", "port": 0})
        three = await sup.start({"kind": "server", "port": 0})
        assert (named.id, one.id, three.id) == ("server-2", "server-1", "server-3")


async def test_start_needs_async_with():
    sup = Supervisor()
    with pytest.raises(RuntimeError):
        await sup.start({"kind": "server", "port": 0})


async def test_bad_spec_opens_nothing():
    async with Supervisor() as sup:
        with pytest.raises(BadSpec):
            await sup.start({"kind": "server", "port": 70000})
        assert sup.workers == {}


async def test_leaving_async_with_stops_every_worker():
    async with Supervisor() as sup:
        servers = [await start_server(sup) for _ in range(3)]
        client = await sup.start({"kind": "client", "port": servers[0].local[1],
                                  "count": 1000, "interval": 0.05})
        await until(lambda: client.counters["replies"] >= 1, "the first reply")
    for worker in [*servers, client]:
        assert worker.state == "stopped"
        assert worker.sock is None
        assert worker.task.done()
        assert worker.history[-1].type == "stopped"
    for server in servers:  # every port is free again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(server.local)


async def test_events_are_kept_per_worker():
    async with Supervisor(history=2) as sup:
        server = await start_server(sup)
        for n in range(3):
            await ask(server.local[1], b"x" * n)
        kept = sup.events(server.id)
        assert [e.type for e in kept] == ["received", "sent"]  # the newest two
        assert kept[-1].text == "Your data was 2 bytes long"


# --- failures stay inside the worker that failed -------------------------------------


class ExplodingServer(ServerWorker):
    """A server whose run() raises at once.

    The real workers only crash on an engine bug, so this test plants one to see how the
    supervisor reports it; there is no real-world way to make a healthy worker crash.
    """

    async def run(self) -> str:
        raise RuntimeError("planted bug")


async def test_a_crashing_worker_fails_alone(monkeypatch):
    async with Supervisor() as sup:
        healthy = await start_server(sup)
        with monkeypatch.context() as patch:
            patch.setitem(WORKER_CLASSES, "server", ExplodingServer)
            broken = await sup.start({"kind": "server", "port": 0})
        await ended(broken)
        assert broken.state == "failed"
        assert broken.sock is None
        assert types(broken) == ["listening", "error", "stopped"]
        _, error, stopped = broken.history
        assert "planted bug" in error.message
        assert error.message.startswith("The worker failed")
        assert "RuntimeError" in error.error
        assert stopped.state == "failed"
        # the other worker, and the supervisor, carry on
        assert healthy.state == "running"
        data, _ = await ask(healthy.local[1], b"ping")
        assert data == b"Your data was 4 bytes long"
        client = await sup.start({"kind": "client", "port": healthy.local[1]})
        await ended(client)
        assert client.counters["replies"] == 1


async def test_a_crash_in_the_read_callback_fails_the_server(monkeypatch):
    async with Supervisor() as sup:
        healthy = await start_server(sup)
        victim = await start_server(sup)

        def answer(data: bytes, size: int | None = None) -> bytes:
            # planted bug in the socket callback: it must end this worker, not the loop
            raise ValueError("bad answer")

        monkeypatch.setattr(victim.responder, "answer", answer)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"boom", (LOOPBACK, victim.local[1]))
            await ended(victim)
        assert victim.state == "failed"
        assert types(victim) == ["listening", "received", "error", "stopped"]
        assert "bad answer" in victim.history[-2].message
        assert victim.sock is None
        data, _ = await ask(healthy.local[1], b"ok?")
        assert data == b"Your data was 3 bytes long"
        assert healthy.state == "running"


async def test_binary_request_is_shown_safely():
    async with Supervisor() as sup:
        server = await start_server(sup)
        payload = b"\xff\xfe\x00\x80 binary"
        data, _ = await ask(server.local[1], payload)
        assert data == f"Your data was {len(payload)} bytes long".encode()
        received = of_type(server, "received")[0]
        assert received.text == show(payload) == "\\xff\\xfe\x00\\x80 binary"
        assert received.size == len(payload)
