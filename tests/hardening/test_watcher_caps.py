"""Watcher caps that fit a class (issue 17): read-only viewers and token holders counted apart,
and a per-address limit so one runaway tab or script cannot take every slot.

The class comes from many addresses: each client binds its own loopback source address
(127.0.0.2, 127.0.0.3, …; all of 127/8 is this machine), so the app sees what it would see
from a room of laptops, and nothing leaves loopback."""

import asyncio
import json
import re

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

VIEW_LINE = re.compile(r"\?view=(\S+)")


def viewer_headers(app) -> dict[str, str]:
    """What a viewer's browser sends on `/ws/page`: its cookie and the dashboard's Origin."""
    token = VIEW_LINE.search(app.output()).group(1)
    return {"Cookie": f"udplab_view_{app.port}={token}", "Origin": app.origin}


def teacher_headers(app) -> dict[str, str]:
    return {**app.cookie, "Origin": app.origin}


async def watch(app, headers: dict[str, str], address: str = "127.0.0.1"):
    """An open page stream from `address` that has had its first message."""
    socket_ = await connect(f"{app.ws_base}/ws/page", additional_headers=headers,
                            open_timeout=20, local_addr=(address, 0))
    async with asyncio.timeout(20):
        await socket_.recv()
    return socket_


async def refused(app, headers: dict[str, str], address: str = "127.0.0.1") -> str:
    """The error of a handshake the app must refuse with 429."""
    with pytest.raises(InvalidStatus) as caught:
        socket_ = await connect(f"{app.ws_base}/ws/page", additional_headers=headers,
                                open_timeout=10, local_addr=(address, 0))
        await socket_.close()
    response = caught.value.response
    assert response.status_code == 429, response
    return json.loads(response.body)["error"]


async def stats(app) -> dict:
    async with app.async_client() as http:
        return (await http.get("/api/stats")).json()


async def wait_released(app) -> None:
    async with asyncio.timeout(10):
        while (now := await stats(app))["watchers"] or now["viewers"]:
            await asyncio.sleep(0.05)


async def test_a_class_of_100_viewers_and_the_teacher_connect_with_the_defaults(apps):
    app = apps.start()
    viewer = viewer_headers(app)
    # 8 viewers per address (the default per-address limit), 13 addresses.
    addresses = [f"127.0.0.{2 + n // 8}" for n in range(100)]
    sockets = []
    try:
        async with asyncio.timeout(50):
            sockets = list(await asyncio.gather(*(watch(app, viewer, a) for a in addresses)))
            sockets.append(await watch(app, teacher_headers(app)))
            now = await stats(app)
            assert (now["watchers"], now["viewers"]) == (101, 100), now
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
    await wait_released(app)


async def test_the_ninth_watcher_from_one_address_is_refused(apps):
    app = apps.start()
    viewer = viewer_headers(app)
    sockets = []
    try:
        sockets = [await watch(app, viewer, "127.0.0.5") for _ in range(8)]
        error = await refused(app, viewer, "127.0.0.5")
        assert "--max-watchers-per-address" in error and "127.0.0.5" in error, error
        # The limit counts both kinds: a token holder from that address waits too ...
        assert "--max-watchers-per-address" in await refused(app, teacher_headers(app),
                                                             "127.0.0.5")
        # ... while another address still gets in.
        sockets.append(await watch(app, viewer, "127.0.0.6"))
        await sockets.pop(0).close()  # one closed tab frees its address's slot
        async with asyncio.timeout(10):
            while (await stats(app))["watchers"] != 8:
                await asyncio.sleep(0.05)
        sockets.append(await watch(app, viewer, "127.0.0.5"))
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
    await wait_released(app)


async def test_viewers_and_token_holders_each_have_their_own_cap(apps):
    app = apps.start("--max-viewers", "3", "--max-watchers", "2")
    viewer, teacher = viewer_headers(app), teacher_headers(app)
    sockets = []
    try:
        sockets = [await watch(app, viewer, f"127.0.0.{n}") for n in (2, 3, 4)]
        error = await refused(app, viewer, "127.0.0.9")
        assert "3 read-only viewers" in error and "--max-viewers" in error, error
        # A full class never locks the teacher out.
        sockets += [await watch(app, teacher), await watch(app, teacher)]
        error = await refused(app, teacher)
        assert "2 watchers with the token" in error and "--max-watchers" in error, error
        assert "--max-viewers" not in error
        now = await stats(app)
        assert (now["watchers"], now["viewers"]) == (5, 3), now
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
    await wait_released(app)
    # Released counts let both kinds in again.
    again = [await watch(app, viewer, "127.0.0.9"), await watch(app, teacher)]
    await asyncio.gather(*(s.close() for s in again))


async def test_40_concurrent_viewers_from_one_address_get_exactly_its_8_slots(apps):
    app = apps.start()
    viewer = viewer_headers(app)

    async def attempt():
        try:
            return await watch(app, viewer, "127.0.0.7")
        except InvalidStatus as refusal:
            assert refusal.response.status_code == 429
            return None

    async with asyncio.timeout(40):
        sockets = await asyncio.gather(*(attempt() for _ in range(40)))
        accepted = [s for s in sockets if s is not None]
        try:
            assert len(accepted) == 8, len(accepted)
            assert (await stats(app))["viewers"] == 8
        finally:
            await asyncio.gather(*(s.close() for s in accepted))
    await wait_released(app)
