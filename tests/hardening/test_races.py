"""Issue 13, races between a check and its insert: many requests at once against a real
uvicorn. The cap holds, a name has one owner, every started socket is listed and can be
stopped, refused starts use no ids, and SIGTERM still ends the app promptly afterwards.

The clients aim at a UDP socket of the test on loopback (a sink that never answers); with
`daemon` they resend forever, so a worker the app lost track of would keep the sink busy."""

import asyncio
import signal
import socket
import subprocess
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

LOOPBACK = "127.0.0.1"
CAP = 64  # udplab's default --max-workers
EXIT_WITHIN = 10.0


@pytest.fixture
def sink():
    """A UDP socket on loopback that counts what reaches it and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.05)
        yield sock


def drain(sock: socket.socket, seconds: float) -> int:
    """Datagrams that reach `sock` within `seconds` (bounded in time)."""
    got, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.recv(2048)
            got += 1
        except TimeoutError:
            pass
    return got


def client_spec(port: int, **extra) -> dict:
    # "localhost" makes every start await name resolution between its checks and its insert.
    return {"kind": "client", "host": "localhost", "port": port, "daemon": True,
            "timeout": 0.1, "give_up_after": 0.3, "message": "race", **extra}


async def post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with app.async_client(limits=limits) as http:
        return await asyncio.gather(*(http.post("/api/workers", json=b) for b in bodies))


def sigterm_exits_promptly(app) -> None:
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    try:
        code = app.proc.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - started
    assert code == 0, (f"exit code {code} {took:.1f} s after SIGTERM (None: still running)"
                       f":\n{app.log()[-3000:]}")
    assert "Traceback" not in app.log(), app.log()


def test_150_concurrent_starts_stay_under_the_cap_and_every_one_is_owned(apps, sink):
    app = apps.start()
    port = sink.getsockname()[1]
    responses = asyncio.run(post_all(app, [client_spec(port) for _ in range(150)]))
    codes = [r.status_code for r in responses]
    accepted = [r.json()["id"] for r in responses if r.status_code == 201]
    assert set(codes) <= {201, 429}, [r.text for r in responses if r.status_code not in
                                      (201, 429)][:3]
    assert 0 < len(accepted) <= CAP, f"{len(accepted)} accepted against a cap of {CAP}"
    assert len(set(accepted)) == len(accepted), "two workers got one id"
    refused = next(r.json()["error"] for r in responses if r.status_code == 429)
    assert "--max-workers" in refused
    with app.client() as http:
        listed = {w["id"]: w for w in http.get("/api/workers").json()["workers"]}
        assert set(accepted) <= set(listed), "a started worker is not listed"
        alive = [i for i, w in listed.items() if w["state"] not in ("stopped", "finished",
                                                                     "failed")]
        assert len(alive) <= CAP and http.get("/api/stats").json()["alive"] <= CAP
        assert drain(sink, 0.5) > 0, "the clients must be sending"
        for worker_id in accepted:
            response = http.delete(f"/api/workers/{worker_id}")
            assert response.status_code == 200 and response.json()["state"] == "stopped"
        assert http.get("/api/stats").json()["alive"] == 0
    drain(sink, 0.2)  # what was already in the socket's queue
    assert drain(sink, 1.0) == 0, "a worker nobody owns is still sending"
    sigterm_exits_promptly(app)


def test_20_concurrent_starts_of_one_name_have_one_winner(apps, sink):
    app = apps.start()
    port = sink.getsockname()[1]
    responses = asyncio.run(post_all(app, [client_spec(port, name="dup")] * 20))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 19, [r.text for r in responses]
    assert all("'dup' already exists" in r.json()["error"]
               for r in responses if r.status_code == 409)
    with app.client() as http:
        assert [w["id"] for w in http.get("/api/workers").json()["workers"]] == ["dup"]
        assert drain(sink, 0.5) > 0
        assert http.delete("/api/workers/dup").json()["state"] == "stopped"
        assert http.get("/api/stats").json()["alive"] == 0
    drain(sink, 0.2)
    assert drain(sink, 1.0) == 0, "another 'dup' nobody owns is still sending"
    sigterm_exits_promptly(app)


def test_refused_starts_use_no_ids(apps):
    app = apps.start()
    with app.client() as http:
        first = http.start(kind="server", host=LOOPBACK, port=0)
        assert first["id"] == "server-1"
        taken = first["local"][1]
        # Refused at each stage after the spec is read: the bind, the service name, the
        # impostor's target.
        for bad in ({"kind": "server", "host": LOOPBACK, "port": taken},
                    {"kind": "client", "host": LOOPBACK, "port": "no-such-service"},
                    {"kind": "spoofer", "target": "no-such-client"}):
            assert http.post("/api/workers", json=bad).status_code in (409, 422)
        assert http.start(kind="client", host=LOOPBACK, port=taken, count=1)["id"] == "client-2"
        assert http.start(kind="server", host=LOOPBACK, port=0)["id"] == "server-3"
        http.stop_started()


async def test_concurrent_recipe_plays_run_one_recipe(apps):
    app = apps.start()
    name = "01-listing-2-1"
    async with app.async_client(limits=httpx.Limits(max_connections=20)) as http:
        responses = await asyncio.gather(*(http.post(f"/api/recipes/{name}")
                                           for _ in range(20)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] + [409] * 19, [r.text for r in responses]
        message = next(r.json()["error"] for r in responses if r.status_code == 409)
        assert "A recipe is already running" in message and "wait for it or stop it" in message
        run = next(r.json() for r in responses if r.status_code == 201)
        workers = (await http.get("/api/workers")).json()["workers"]
        assert {w["id"].rsplit("-", 1)[0] for w in workers} <= {run["id"]}
        async with asyncio.timeout(20):
            while not (await http.get(f"/api/recipes/runs/{run['id']}")).json()["done"]:
                await asyncio.sleep(0.05)
        # Once it is done, the next run may start.
        again = await http.post(f"/api/recipes/{name}", json={"wait": True})
        assert again.status_code == 201 and again.json()["ok"], again.text


def test_a_stopped_recipe_frees_the_way_for_the_next(apps, until):
    app = apps.start()
    with app.client() as http:
        idle = http.post("/api/recipes/05-server-down", json={"step": True}).json()
        assert not idle["done"]
        # A step-by-step run waiting for its next step plays nothing: another may start.
        playing = http.post("/api/recipes/01-listing-2-1")
        assert playing.status_code == 201, playing.text
        playing = playing.json()
        assert http.post("/api/recipes/01-listing-2-1").status_code == 409
        step = http.post(f"/api/recipes/runs/{idle['id']}/next")
        assert step.status_code == 409 and "already running" in step.json()["error"]
        assert http.delete(f"/api/recipes/runs/{playing['id']}").status_code == 200
        stopped = until(lambda: (r := http.get(f"/api/recipes/runs/{playing['id']}").json())
                        ["done"] and r, "the stopped run to end")
        assert not stopped["ok"]
        assert all(http.get(f"/api/workers/{w}").json()["state"] != "running"
                   for w in stopped["workers"].values())
        step = http.post(f"/api/recipes/runs/{idle['id']}/next")
        assert step.status_code == 200 and step.json()["index"] == 2, step.text
        assert http.delete(f"/api/recipes/runs/{idle['id']}").json()["done"]


def lab_namespaces(app) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout.split("\n")
    return sorted(line.split()[0] for line in listed
                  if line.startswith(f"udplab-{app.proc.pid}-"))


async def test_concurrent_lab_builds_build_one_lab_and_teardowns_leave_none(apps):
    app = apps.start()
    async with app.async_client() as http:
        builds = await asyncio.gather(*(http.post("/api/lab") for _ in range(6)))
        codes = sorted(r.status_code for r in builds)
        assert codes == [201] + [409] * 5, [r.text for r in builds]
        assert all("already built" in r.json()["error"] for r in builds if r.status_code == 409)
        lab = (await http.get("/api/lab")).json()
        assert lab["built"] and len(lab["hosts"]) == 4
        assert len(lab_namespaces(app)) == 6  # switch, router, h1..h4
        # The lab works: a server on h4 answers a client on h1 through the router.
        server = (await http.post("/api/workers", json={
            "kind": "server", "host": "0.0.0.0", "port": 0, "where": "h4"})).json()
        h4 = next(h["address"] for h in lab["hosts"] if h["name"] == "h4")
        client = (await http.post("/api/workers", json={
            "kind": "client", "host": h4, "port": server["local"][1], "where": "h1"})).json()
        async with asyncio.timeout(5):
            while (await http.get(f"/api/workers/{client['id']}")).json()["state"] == "running":
                await asyncio.sleep(0.05)
        assert (await http.get(f"/api/workers/{client['id']}")).json()["counters"]["replies"] == 1
        # Three teardowns and a build at once: the four requests come on four connections, so
        # the build may be served before the teardowns (the lab is still built: 409) or after
        # them (201); every teardown succeeds, and what is left is one whole lab or none.
        *teardowns, rebuild = await asyncio.gather(*(http.delete("/api/lab") for _ in range(3)),
                                                   http.post("/api/lab"))
        assert all(r.status_code == 200 for r in teardowns), [r.text for r in teardowns]
        assert rebuild.status_code == 201 or (
            rebuild.status_code == 409 and "already built" in rebuild.json()["error"]), rebuild.text
        built = (await http.get("/api/lab")).json()["built"]
        assert len(lab_namespaces(app)) == (6 if built else 0)
        await http.delete("/api/lab")
        assert lab_namespaces(app) == []


async def test_40_concurrent_watchers_against_a_cap_of_8(apps):
    app = apps.start("--max-watchers", "8")
    url = f"{app.ws_base}/api/events"

    async def watch():
        try:
            socket_ = await connect(url, additional_headers=app.bearer, open_timeout=10)
        except InvalidStatus as refused:
            assert refused.response.status_code == 429
            return None
        await socket_.recv()
        return socket_

    async with asyncio.timeout(30):
        sockets = await asyncio.gather(*(watch() for _ in range(40)))
        accepted = [s for s in sockets if s is not None]
        try:
            assert len(accepted) == 8, len(accepted)
            async with app.async_client() as http:
                assert (await http.get("/api/stats")).json()["watchers"] == 8
        finally:
            for socket_ in accepted:
                await socket_.close()
        async with app.async_client() as http:  # closed watchers free their slots
            while (await http.get("/api/stats")).json()["watchers"]:
                await asyncio.sleep(0.05)


async def test_sigterm_in_the_middle_of_a_storm_of_starts(apps, sink):
    app = apps.start()
    port = sink.getsockname()[1]
    limits = httpx.Limits(max_connections=150, max_keepalive_connections=0)
    async with app.async_client(limits=limits) as http:
        async def start():
            try:
                return (await http.post("/api/workers", json=client_spec(port))).status_code
            except httpx.TransportError:
                return None  # the server went away mid-request
        storm = [asyncio.create_task(start()) for _ in range(150)]
        done, _ = await asyncio.wait(storm, return_when=asyncio.FIRST_COMPLETED)
        assert done
        await asyncio.to_thread(sigterm_exits_promptly, app)
        codes = await asyncio.gather(*storm)
    assert 201 in codes, codes
    await asyncio.to_thread(drain, sink, 0.2)
    assert await asyncio.to_thread(drain, sink, 1.0) == 0, "a worker outlived the app"
