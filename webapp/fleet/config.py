"""The fleet's set-up files: nats-server's config and one credentials file per machine.

Plain data and file writing, no NATS client. Authentication is nats-server's user/password
with per-user subject permissions (nats-server 2.9): each machine may receive only its own
commands and publish only its own events and replies, so a lab PC whose credentials leak can
neither pose as another machine nor drive the fleet.
"""

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

APP = "udplab"
DASHBOARD = "dashboard"
LOCAL = "local"  # the dashboard's own machine in the fleet
RESERVED = frozenset({DASHBOARD, LOCAL})
_MACHINE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DEFAULT_LISTEN = "0.0.0.0:4222"


class FleetError(Exception):
    """A fleet set-up or connection problem, said in one line for people."""


def check_machine(name: str) -> str:
    """`name` if it can be a machine's name (a NATS subject token), else `FleetError`."""
    if not _MACHINE.fullmatch(name or "") or name in RESERVED:
        raise FleetError(
            f"{name!r} cannot name a machine: use up to 32 lower-case letters, digits, '-' or "
            f"'_', starting with a letter or digit, and not {' or '.join(sorted(RESERVED))}")
    return name


def subject(machine: str, *parts: str) -> str:
    """A subject in the fleet's hierarchy: `udplab.<machine>.<part>...`."""
    return ".".join((APP, machine, *parts))


@dataclass(frozen=True)
class Creds:
    """What one user of nats-server needs: its user name, its secret, the URL, and (for a
    TLS fleet) the server's certificate to trust, so a self-signed one needs no CA flag."""

    user: str
    password: str
    url: str = ""
    tls_cert: str = ""  # PEM

    @property
    def machine(self) -> str | None:
        """The machine these credentials speak for; None for the dashboard's."""
        return None if self.user == DASHBOARD else self.user

    def to_json(self) -> str:
        """The file's text: JSON with the user, password, URL and subject prefix."""
        fields = {k: v for k, v in asdict(self).items() if v != "" or k != "tls_cert"}
        return json.dumps({**fields, "prefix": subject(self.user)}, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> "Creds":
        """Read a credentials file written by `fleet init`; `FleetError` if it is not one."""
        try:
            raw = json.loads(Path(path).read_text())
            return cls(user=str(raw["user"]), password=str(raw["password"]),
                       url=str(raw.get("url", "")), tls_cert=str(raw.get("tls_cert", "")))
        except OSError as exc:
            raise FleetError(f"cannot read the credentials file {path}: {exc.strerror}") \
                from None
        except (ValueError, KeyError, TypeError):
            raise FleetError(f"{path} is not a credentials file written by "
                             "'udplab fleet init'") from None


def machine_permissions(machine: str) -> dict:
    """A machine hears only its own commands and speaks only its own events and replies."""
    return {
        "publish": {"allow": [subject(machine, "events"), subject(machine, "hello")]},
        "subscribe": {"allow": [subject(machine, "cmd", ">")]},
        # replies to the dashboard's requests, only while a request waits for one
        "allow_responses": True,
    }


def dashboard_permissions() -> dict:
    """The dashboard commands every machine and hears every machine's events."""
    return {
        "publish": {"allow": [subject("*", "cmd", ">")]},
        "subscribe": {"allow": [subject("*", "events"), subject("*", "hello"), "_INBOX.>"]},
    }


def server_config(users: list[Creds], listen: str, *, tls_cert: str | None = None,
                  tls_key: str | None = None) -> str:
    """nats-server's config file (its syntax accepts JSON values)."""
    entries = []
    for creds in users:
        perms = dashboard_permissions() if creds.user == DASHBOARD \
            else machine_permissions(creds.user)
        entries.append({"user": creds.user, "password": creds.password, "permissions": perms})
    lines = ["# Written by 'udplab fleet init'. Run: nats-server -c nats-server.conf",
             f"listen: {json.dumps(listen)}",
             # a lab of 40 machines sends small batches; keep a runaway one from hogging it
             "max_payload: 1048576",
             "authorization {",
             "  users: " + json.dumps(entries, indent=2).replace("\n", "\n  "),
             "}"]
    if tls_cert or tls_key:
        lines += ["tls {",
                  f"  cert_file: {json.dumps(str(Path(tls_cert).resolve()))}",
                  f"  key_file: {json.dumps(str(Path(tls_key).resolve()))}",
                  "}"]
    return "\n".join(lines) + "\n"


def split_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` checked; `FleetError` if not."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FleetError(f"--listen {listen!r} must be HOST:PORT, such as 0.0.0.0:4222")
    return host.strip("[]"), int(port)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from the start (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def init(directory: Path, machines: list[str], *, listen: str = DEFAULT_LISTEN,
         url_host: str | None = None, tls_cert: str | None = None,
         tls_key: str | None = None) -> dict[str, Path]:
    """Write nats-server.conf, dashboard.creds and one <machine>.creds into `directory`.

    Every secret is new and random. Returns each file written by its user ('server' for the
    config)."""
    names = [check_machine(m) for m in machines]
    if not names:
        raise FleetError("give at least one machine: --machines a,b,c")
    if len(set(names)) != len(names):
        raise FleetError("a machine is named twice in --machines")
    if bool(tls_cert) != bool(tls_key):
        raise FleetError("TLS needs both --tls-cert and --tls-key")
    for path in (tls_cert, tls_key):
        if path and not Path(path).is_file():
            raise FleetError(f"no such file: {path}")
    host, port = split_listen(listen)
    shown = url_host or (host if host not in ("0.0.0.0", "::") else "NATS-HOST")
    scheme = "tls" if tls_cert else "nats"
    url = f"{scheme}://{shown}:{port}"
    pem = Path(tls_cert).read_text() if tls_cert else ""
    users = [Creds(user, secrets.token_urlsafe(24), url, pem) for user in (DASHBOARD, *names)]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for creds in users:
        path = directory / f"{creds.user}.creds"
        _write_private(path, creds.to_json())
        written[creds.user] = path
    conf = directory / "nats-server.conf"
    _write_private(conf, server_config(users, listen, tls_cert=tls_cert, tls_key=tls_key))
    written["server"] = conf
    return written
