"""`udplab fleet init` and the permissions it writes, against a real nats-server (loopback)."""

import asyncio
import json
import stat
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from webapp.fleet import config
from webapp.fleet.config import FleetError
from webapp.fleet.connection import Connection

REPO = Path(__file__).resolve().parents[2]


def run_udplab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webapp", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_init_writes_private_files_with_a_new_secret_each(tmp_path):
    result = run_udplab("fleet", "init", str(tmp_path / "f"), "--machines", "a,b,c",
                        "--listen", "127.0.0.1:4299")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert names == ["a.creds", "b.creds", "c.creds", "dashboard.creds", "nats-server.conf"]
    secrets = set()
    for path in (tmp_path / "f").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        if path.suffix == ".creds":
            creds = json.loads(path.read_text())
            assert creds["user"] == path.stem and creds["url"] == "nats://127.0.0.1:4299"
            assert len(creds["password"]) >= 32
            secrets.add(creds["password"])
    assert len(secrets) == 4
    for machine in "abc":
        assert (f"udplab agent --nats nats://127.0.0.1:4299 --name {machine} "
                f"--creds {machine}.creds") in result.stdout
    assert "nats-server -c" in result.stdout
    check = subprocess.run(["/usr/sbin/nats-server", "-c",
                            str(tmp_path / "f" / "nats-server.conf"), "-t"],
                           capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr + check.stdout


@pytest.mark.parametrize("machines, words", [
    ("a,A", "cannot name a machine"), ("a,a", "named twice"), ("a,dashboard", "not dashboard"),
    ("a.b", "cannot name a machine"), ("a,>", "cannot name a machine"),
])
def test_init_refuses_bad_machine_names(tmp_path, machines, words):
    result = run_udplab("fleet", "init", str(tmp_path / "f"), "--machines", machines)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "f").exists()


def test_init_writes_a_tls_config_that_nats_server_accepts(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    written = config.init(tmp_path / "f", ["a"], listen="127.0.0.1:4298",
                          tls_cert=str(cert), tls_key=str(key))
    assert config.Creds.load(written["a"]).url == "tls://127.0.0.1:4298"
    conf = written["server"].read_text()
    assert f'cert_file: "{cert}"' in conf and f'key_file: "{key}"' in conf
    check = subprocess.run(["/usr/sbin/nats-server", "-c", str(written["server"]), "-t"],
                           capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr + check.stdout
    with pytest.raises(FleetError, match="both"):
        config.init(tmp_path / "g", ["a"], tls_cert=str(cert))


async def connect(server, user: str, errors: list[str]) -> nats.NATS:
    creds = server.creds(user)

    async def error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(server.url, user=creds.user, password=creds.password,
                              error_cb=error, allow_reconnect=False)


async def test_a_machine_cannot_publish_as_another(nats_loopback):
    errors: list[str] = []
    dashboard = await connect(nats_loopback, "dashboard", [])
    a = await connect(nats_loopback, "a", errors)
    try:
        heard = []

        async def hear(msg):
            heard.append(msg.subject)

        await dashboard.subscribe("udplab.*.events", cb=hear)
        await dashboard.flush()
        await a.publish("udplab.b.events", b'{"events": []}')  # posing as b
        await a.publish("udplab.a.events", b'{"events": []}')  # its own: allowed
        await a.flush()
        for tick in range(500):  # 5 s at most
            if heard and errors:
                break
            if tick % 50 == 49 and not heard:  # once in a full run the first was not heard
                await a.publish("udplab.a.events", b'{"events": []}')
            await asyncio.sleep(0.01)
        assert heard and errors, f"heard {heard}, errors {errors}"
        await asyncio.sleep(0.2)  # room for b's message to arrive, if it ever could
        assert set(heard) == {"udplab.a.events"}
        assert any('permissions violation for publish to "udplab.b.events"' in e
                   for e in errors), errors
    finally:
        await a.close()
        await dashboard.close()


async def test_a_machine_cannot_receive_another_machines_commands(nats_loopback):
    errors: list[str] = []
    dashboard = await connect(nats_loopback, "dashboard", [])
    a = await connect(nats_loopback, "a", errors)
    try:
        got = []

        async def take(msg):
            got.append(msg.subject)

        await a.subscribe("udplab.b.cmd.>", cb=take)
        await a.subscribe("udplab.a.cmd.>", cb=take)
        await a.flush()
        await dashboard.publish("udplab.b.cmd.start", b"{}")
        for tick in range(100):  # 10 s at most; on a loaded machine say the allowed one again
            if not got and tick % 20 == 0:
                await dashboard.publish("udplab.a.cmd.start", b"{}")
                await dashboard.flush()
            if got and errors:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        assert got, f"a never heard its own command in 10 s (errors: {errors})"
        assert set(got) == {"udplab.a.cmd.start"}, f"a heard another machine's command: {got}"
        assert any('permissions violation for subscription to "udplab.b.cmd.>"' in e
                   for e in errors), f"no permissions violation for b's commands: {errors}"
        # nor may a machine command anyone, itself included
        await a.publish("udplab.a.cmd.start", b"{}")
        await a.flush()
        async with asyncio.timeout(5):
            while not any("publish to \"udplab.a.cmd.start\"" in e for e in errors):
                await asyncio.sleep(0.01)
    finally:
        await a.close()
        await dashboard.close()


async def test_a_wrong_password_is_refused_at_once(nats_loopback):
    good = nats_loopback.creds("a")
    wrong = config.Creds(user="a", password=good.password[:-1] + "x", url=good.url)
    connection = Connection(nats_loopback.url, wrong, name="test")
    async with asyncio.timeout(10):
        with pytest.raises(FleetError, match="refused the credentials of 'a'"):
            await connection.open()
    # and the right one is let in
    connection = Connection(nats_loopback.url, good, name="test")
    nc = await connection.open()
    try:
        assert nc.is_connected
        await connection.check_refused(0.1)
    finally:
        await connection.close()


async def test_a_tls_fleet_trusts_the_certificate_fleet_init_put_in_the_credentials(
        tmp_path, new_fleet):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    server = new_fleet(tmp_path / "f", "127.0.0.1", ["a"])
    config.init(server.dir, ["a"], listen=f"127.0.0.1:{server.port}", tls_cert=str(cert),
                tls_key=str(key))
    server.start()
    try:
        creds = server.creds("a")
        assert creds.url.startswith("tls://") and "BEGIN CERTIFICATE" in creds.tls_cert
        connection = Connection(creds.url, creds, name="tls test")
        nc = await connection.open()
        assert nc.is_connected and nc.connected_url.scheme == "tls"
        await connection.close()
        # without the certificate it is one plain line, not a retry for ever
        bare = config.Creds(user="a", password=creds.password, url=creds.url)
        async with asyncio.timeout(10):
            with pytest.raises(FleetError, match="TLS certificate is not trusted here: "
                                                 "self.signed certificate; pass --tls-ca"):
                await Connection(creds.url, bare, name="tls test").open()
        # and a plain nats:// URL to it is upgraded, with the same trust
        connection = Connection(creds.url.replace("tls://", "nats://"), creds, name="tls")
        assert (await connection.open()).is_connected
        await connection.close()
    finally:
        server.stop()
