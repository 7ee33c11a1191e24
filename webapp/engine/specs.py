"""Worker specs: what a person asks for, checked field by field before anything is opened.

`parse_spec(raw)` takes the JSON object of `POST /api/workers` (or a form's strings) and gives
a frozen spec, or raises `BadSpec` naming the field, the cause and the fix.
"""

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from webapp.engine.backoff import Backoff
from webapp.engine.errors import BadSpec

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_SERVICE = re.compile(r"[A-Za-z][A-Za-z0-9._+-]{0,31}")
_MAX_MESSAGE = 65507  # the largest UDP payload over IPv4


def _name(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BadSpec(
            f"The {field} {value!r} is not usable: use up to 32 lower-case letters, digits, "
            "'-' or '_', starting with a letter or digit",
            field=field,
        )
    return value


def _host(field: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 253 or any(c.isspace() for c in value.strip()):
        raise BadSpec(
            f"The {field} must be an address or a host name such as 127.0.0.1 or localhost, "
            f"not {value!r}",
            field=field,
        )
    return value.strip()


def _port(field: str, value: Any) -> int | str:
    if isinstance(value, str) and value.strip().isdigit():
        try:
            value = int(value.strip())
        except ValueError:  # a digit int() refuses ('²'), or more than 4300 digits
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 65535:
            return value
        raise BadSpec(
            f"Port {value} is out of range: UDP ports go from 0 (the OS picks one) to 65535",
            field=field,
        )
    if isinstance(value, str) and _SERVICE.fullmatch(value.strip()):
        return value.strip()  # a service name, looked up when the worker starts
    raise BadSpec(
        f"The {field} must be a number from 0 to 65535 or a service name such as 'domain', "
        f"not {value!r}",
        field=field,
    )


def _number(lo: float, hi: float, *, integer: bool = False) -> Callable[[str, Any], Any]:
    def check(field: str, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                value = None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(value, int) and not lo <= value <= hi:
            ok = False  # before any float(): an int past 1e308 raises OverflowError there
        if integer:
            ok = ok and float(value).is_integer()
        if not ok or not math.isfinite(value) or not lo <= value <= hi:
            kind = "a whole number" if integer else "a number"
            raise BadSpec(f"The {field} must be {kind} from {lo:g} to {hi:g}", field=field)
        return int(value) if integer else float(value)

    return check


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def optional(field: str, value: Any) -> Any:
        return None if value is None or value == "" else check(field, value)

    return optional


def _choice(*options: str) -> Callable[[str, Any], str]:
    def check(field: str, value: Any) -> str:
        if value not in options:
            raise BadSpec(
                f"Unknown {field} {value!r}: use one of {', '.join(options)}", field=field
            )
        return value

    return check


def _message(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value.encode()) > _MAX_MESSAGE:
        raise BadSpec(
            f"The {field} must be text of at most {_MAX_MESSAGE} bytes (the largest UDP payload)",
            field=field,
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """Fields every worker kind shares."""

    kind: ClassVar[str]
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {"name": _name}
    name: str | None = None
    host: str = "127.0.0.1"
    port: int | str = 1060

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Spec":
        """Check every field of `raw` and build the spec; unknown fields are refused."""
        values = {}
        for key, value in raw.items():
            if key == "kind":
                continue
            rule = cls.rules.get(key)
            if rule is None:
                known = ", ".join(sorted(["kind", *cls.rules]))
                raise BadSpec(
                    f"Unknown field {key!r} for a {cls.kind}: the fields are {known}", field=key
                )
            checked = rule(key, value)
            if checked is not None:
                values[key] = checked
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON, `kind` first."""
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec(Spec):
    """A server of listings 2-1 and 2-2: bind, answer, maybe pretend to drop."""

    kind: ClassVar[str] = "server"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        "name": _name,
        "host": _host,
        "port": _port,
        "reply": _choice("length", "echo", "none"),
        "drop_rate": _number(0, 1),
        "seed": _optional(_number(-(2**63), 2**63 - 1, integer=True)),
    }
    reply: str = "length"
    drop_rate: float = 0.0
    seed: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSpec(Spec):
    """A client of listings 2-1 and 2-2: send, wait with backoff, report the reply."""

    kind: ClassVar[str] = "client"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        "name": _name,
        "host": _host,
        "port": _port,
        "mode": _choice("promiscuous", "connected"),
        "message": _message,
        "count": _number(1, 1_000_000, integer=True),
        "interval": _number(0, 3600),
        "timeout": _number(0.001, 60),
        "backoff": _number(1, 10),
        "give_up_after": _number(0.001, 3600),
    }
    mode: str = "promiscuous"
    message: str | None = None  # None: the book's `The time is …`, fresh for each request
    count: int = 1
    interval: float = 1.0
    timeout: float = 0.1
    backoff: float = 2.0
    give_up_after: float = 2.0

    def __post_init__(self) -> None:
        if not self.host:
            raise BadSpec(
                "The host is empty: a client needs the server's address, such as 127.0.0.1",
                field="host",
            )

    @property
    def schedule(self) -> Backoff:
        """The retry timing this client uses."""
        return Backoff(self.timeout, self.backoff, self.give_up_after)


KINDS: dict[str, type[Spec]] = {cls.kind: cls for cls in (ServerSpec, ClientSpec)}


def parse_spec(raw: Any) -> Spec:
    """Check a worker spec (a dict with `kind`) and return it, or raise `BadSpec`."""
    if not isinstance(raw, dict):
        raise BadSpec("A worker spec must be a JSON object such as {\"kind\": \"server\"}")
    kind = raw.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadSpec(
            f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}", field="kind"
        )
    return cls.from_dict(raw)
