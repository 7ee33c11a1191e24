"""The JSON API of DESIGN.md §3: routes only parse, call the engine and shape the answer."""

import json
from typing import Any

from fastapi import APIRouter, Request, WebSocket

from webapp.engine import BadSpec
from webapp.web.deps import SettingsDep, SupervisorDep
from webapp.web.stream import json_stream

router = APIRouter(prefix="/api", tags=["api"])

SPEC_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {
            "schema": {"type": "object", "required": ["kind"], "properties": {
                "kind": {"type": "string", "enum": ["server", "client"]},
                "name": {"type": "string", "description": "optional id for the worker"},
                "host": {"type": "string", "default": "127.0.0.1"},
                "port": {"oneOf": [{"type": "integer"}, {"type": "string"}], "default": 1060,
                         "description": "a number (0 = the OS picks) or a service name"},
                "reply": {"type": "string", "enum": ["length", "echo", "none"]},
                "drop_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "seed": {"type": "integer"},
                "mode": {"type": "string", "enum": ["promiscuous", "connected"]},
                "message": {"type": "string"},
                "count": {"type": "integer", "minimum": 1},
                "interval": {"type": "number"},
                "timeout": {"type": "number", "default": 0.1},
                "backoff": {"type": "number", "default": 2.0},
                "give_up_after": {"type": "number", "default": 2.0},
            }},
            "examples": {
                "server": {"value": {"kind": "server", "host": "127.0.0.1", "port": 1060}},
                "client": {"value": {"kind": "client", "host": "127.0.0.1", "port": 1060}},
            },
        }},
    }
}


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness; the only route that needs no token."""
    return {"status": "ok"}


@router.get("/workers")
async def list_workers(supervisor: SupervisorDep) -> dict[str, list[dict[str, Any]]]:
    """Every worker, running or ended, oldest first."""
    return {"workers": [w.to_dict() for w in supervisor.workers.values()]}


@router.post("/workers", status_code=201, openapi_extra=SPEC_SCHEMA)
async def start_worker(request: Request, supervisor: SupervisorDep) -> dict[str, Any]:
    """Start a worker from a spec; 422 names a bad field, 409 a taken address or name."""
    body = await request.body()
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadSpec(
            "The body must be a JSON object such as {\"kind\": \"server\", \"port\": 1060}"
        ) from None
    worker = await supervisor.start(raw)
    return worker.to_dict()


@router.get("/workers/{worker_id}")
async def get_worker(worker_id: str, supervisor: SupervisorDep) -> dict[str, Any]:
    """One worker: state, local address, counters."""
    return supervisor.get(worker_id).to_dict()


@router.delete("/workers/{worker_id}")
async def stop_worker(worker_id: str, supervisor: SupervisorDep) -> dict[str, Any]:
    """Stop a worker: its task ends and its socket closes. It stays listed, `stopped`."""
    return (await supervisor.stop(worker_id)).to_dict()


@router.get("/workers/{worker_id}/events")
async def worker_events(worker_id: str, supervisor: SupervisorDep) -> dict[str, list]:
    """A worker's kept events, oldest first."""
    return {"events": [e.to_dict() for e in supervisor.events(worker_id)]}


@router.websocket("/events")
async def events(websocket: WebSocket, supervisor: SupervisorDep,
                 settings: SettingsDep) -> None:
    """Every event as JSON: `{"events": [...], "dropped": N}`, one message per batch."""
    await json_stream(websocket, supervisor, settings)
