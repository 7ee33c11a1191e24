"""What travels between the dashboard and its agents: JSON commands, replies, event batches.

No NATS here, only the encoding, so it is tested without a server. An event from an agent
becomes an event of the same class on the dashboard (so renderers, history and sampling treat
it like a local one), with its worker id made fleet-wide (`b:client-1`) and a `machine` field.
"""

import dataclasses
import json
from typing import Any

from webapp.engine import errors, events
from webapp.engine.events import Event

SEP = ":"  # between a machine's name and a worker id: names never contain it
ERRORS = {cls.__name__: cls for cls in (errors.BadSpec, errors.Conflict, errors.Refused,
                                        errors.UnknownWorker, errors.TooMany,
                                        errors.EngineError)}
_ADDRESS_FIELDS = ("local", "peer")
_WORKER_LIST_FIELDS = ("reached",)


def fleet_id(machine: str, worker_id: str) -> str:
    """A worker's id across the fleet."""
    return f"{machine}{SEP}{worker_id}"


def split_id(worker_id: str) -> tuple[str | None, str]:
    """(machine, id on that machine); machine None for a worker of the dashboard's own."""
    machine, sep, rest = worker_id.partition(SEP)
    return (machine, rest) if sep else (None, worker_id)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":")).encode()


def ok(value: Any) -> bytes:
    """A successful reply."""
    return dumps({"ok": value})


def failure(exc: errors.EngineError) -> bytes:
    """An engine error as a reply; `raise_for()` raises it again on the other side."""
    name = type(exc).__name__ if type(exc).__name__ in ERRORS else "EngineError"
    return dumps({"error": {"class": name, "message": exc.message, "field": exc.field}})


def unpack(data: bytes) -> Any:
    """A reply's value, or its engine error raised again here."""
    reply = json.loads(data)
    if "error" in reply:
        error = reply["error"]
        cls = ERRORS.get(error.get("class"), errors.EngineError)
        raise cls(str(error.get("message")), field=error.get("field"))
    return reply["ok"]


# --- events -------------------------------------------------------------------------------

def _event_classes() -> dict[str, list[type[Event]]]:
    by_type: dict[str, list[type[Event]]] = {}
    for value in vars(events).values():
        if isinstance(value, type) and issubclass(value, Event) and value.type != "event":
            by_type.setdefault(value.type, []).append(value)
    return by_type


_BY_TYPE = _event_classes()
_REMOTE: dict[type[Event], type[Event]] = {}


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def remote_class(cls: type[Event]) -> type[Event]:
    """`cls` with a `machine` field: what an agent's event of that class becomes here."""
    remote = _REMOTE.get(cls)
    if remote is None:
        remote = dataclasses.make_dataclass(
            f"Remote{cls.__name__}",
            # `boot` and `origin` (the agent's run, and the event's number there) let a
            # restarted dashboard ask for what it has not recorded yet
            [("machine", str), ("boot", str, dataclasses.field(default="")),
             ("origin", int, dataclasses.field(default=0))], bases=(cls,),
            frozen=True, slots=True, kw_only=True)
        remote.__doc__ = f"{cls.__doc__} (from another machine of the fleet)"
        _REMOTE[cls] = remote
    return remote


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RemoteNote(Event):
    """An agent's event of a type this dashboard does not know (a newer agent)."""

    type = "note"
    machine: str
    original: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MachineChanged(Event):
    """A machine of the fleet joined, went silent (`lost`) or came back (`up`)."""

    type = "machine"
    machine: str
    state: str


def _pick(kind: str, raw: dict) -> type[Event] | None:
    candidates = _BY_TYPE.get(kind)
    if not candidates:
        return None
    keys = set(raw) - {"type"}
    # the class whose fields fit the keys best (`sent` is a Sent or a BroadcastSent)
    return min(candidates, key=lambda c: len(keys ^ set(_fields(c))))


def event_from_agent(raw: dict, machine: str, seq: int, boot: str = "") -> Event:
    """An agent's event (its `to_dict()`) as an event here, numbered `seq` on this bus."""
    cls = _pick(str(raw.get("type")), raw)
    values: dict[str, Any] = {"seq": seq, "time": float(raw.get("time", 0.0)),
                              "worker": fleet_id(machine, str(raw.get("worker", "?"))),
                              "message": str(raw.get("message", "")), "machine": machine}
    if cls is None:
        return RemoteNote(original=str(raw.get("type")), **values)
    for name, field in _fields(cls).items():
        if name in values or name not in raw:
            continue
        value = raw[name]
        if name in _ADDRESS_FIELDS and isinstance(value, list):
            value = tuple(value)
        elif name in _WORKER_LIST_FIELDS and isinstance(value, list):
            value = [fleet_id(machine, str(v)) for v in value]
        values[name] = value
    origin = raw.get("seq")
    try:
        return remote_class(cls)(boot=boot, origin=origin if isinstance(origin, int) else 0,
                                 **values)
    except TypeError:  # a field missing (an older agent): keep the line, not the details
        return RemoteNote(original=cls.type, **{k: values[k] for k in
                                                ("seq", "time", "worker", "message",
                                                 "machine")})


def worker_from_agent(raw: dict, machine: str) -> dict:
    """A worker's `to_dict()` from an agent, with fleet-wide ids and its machine."""
    out = dict(raw)
    out["id"] = fleet_id(machine, str(raw.get("id")))
    out["machine"] = machine
    return out
