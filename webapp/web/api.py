"""The JSON API of DESIGN.md §3: routes only parse, call the engine and shape the answer."""

import asyncio
import json
import os
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket

from webapp.engine import BadSpec, interfaces, ports, sockopts
from webapp.fleet.wire import SEP
from webapp.web.deps import (
    BindingDep, ExperimentsDep, FleetDep, LabScenariosDep, RecipesDep, SettingsDep,
    SupervisorDep,
)
from webapp.web.stream import json_stream

router = APIRouter(prefix="/api", tags=["api"])

SPEC_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {
            "schema": {"type": "object", "required": ["kind"], "properties": {
                "kind": {"type": "string",
                         "enum": ["server", "client", "spoofer", "stream", "listener",
                                  "broadcast", "mtu-probe", "multicast"]},
                "name": {"type": "string", "description": "optional id for the worker"},
                "host": {"type": "string", "default": "127.0.0.1",
                         "description": "a name, an IPv4 or IPv6 literal (::1, fe80::1%eth0)"},
                "port": {"oneOf": [{"type": "integer"}, {"type": "string"}], "default": 1060,
                         "description": "a number (0 = the OS picks) or a service name"},
                "reply": {"type": "string", "enum": ["length", "echo", "none"]},
                "drop_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "seed": {"type": "integer"},
                "delay": {"type": "number", "description": "server: answer this late (s)"},
                "duplicate": {"type": "boolean", "description": "server: answer twice"},
                "rcvbuf": {"type": "integer", "description": "server: SO_RCVBUF bytes"},
                "mode": {"type": "string", "enum": ["promiscuous", "check-address",
                                                    "connected", "request-id"]},
                "daemon": {"type": "boolean", "description": "client: retry forever"},
                "jitter": {"type": "number", "minimum": 0, "maximum": 1},
                "adaptive": {"type": "boolean",
                             "description": "client: first wait from recent round trips"},
                "target": {"type": "string", "description": "spoofer: a client worker"},
                "forge": {"type": "boolean",
                          "description": "spoofer: forge the server's address (raw socket)"},
                "size": {"type": "integer",
                         "description": "stream: bytes per datagram; mtu-probe: first send"},
                "so_broadcast": {"type": "boolean", "description": "broadcast: SO_BROADCAST"},
                "reuse_addr": {"type": "boolean", "description": "server: SO_REUSEADDR"},
                "join": {"type": "array", "items": {"type": "string"},
                         "description": "listener: multicast groups to join"},
                "sources": {"type": "array", "items": {"type": "string"},
                            "description": "listener: only these senders (source-specific)"},
                "interface": {"type": "string", "description": "listener, multicast: the "
                              "interface of the group (name or IPv4 address; default lo)"},
                "multicast_all": {"type": "boolean", "description": "listener: "
                                  "IP_MULTICAST_ALL (hear groups other sockets joined)"},
                "ttl": {"type": "integer", "minimum": 0, "maximum": 255,
                        "description": "multicast: IP_MULTICAST_TTL (default 1)"},
                "loop": {"type": "boolean", "description": "multicast: IP_MULTICAST_LOOP"},
                "bind": {"type": "string", "description": "multicast: the address to send from"},
                "v6only": {"type": "boolean", "description": "server, listener: "
                           "IPV6_V6ONLY; off, :: is dual-stack"},
                "where": {"type": "string",
                          "description": "a virtual LAN host (h1..h4); absent: this machine"},
                "machine": {"type": "string",
                            "description": "a machine of the fleet (GET /api/machines); "
                                           "absent: the dashboard's own"},
                "rate": {"type": "number", "description": "stream: datagrams per second"},
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


@router.get("/stats")
async def stats(request: Request, supervisor: SupervisorDep) -> dict[str, Any]:
    """How the app itself is doing: workers, watchers, asyncio tasks, open files, memory."""
    try:
        fds = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/status") as status:
            rss = next((int(line.split()[1]) * 1024 for line in status
                        if line.startswith("VmRSS:")), None)
    except OSError:
        fds, rss = None, None
    return {
        "workers": len(supervisor.workers),
        "alive": sum(1 for w in supervisor.workers.values() if w.alive),
        "watchers": request.app.state.watchers,
        "viewers": request.app.state.watcher_kinds["viewers"],
        "tasks": len(asyncio.all_tasks()),
        "open_files": fds,
        "rss_bytes": rss,
        "events_published": supervisor.bus.published,
        "subscribers": supervisor.bus.subscriber_count,
        "lab_built": supervisor.lab.built,
    }


@router.get("/machines")
async def list_machines(fleet: FleetDep) -> dict[str, list[dict[str, Any]]]:
    """The fleet: this machine and every agent, `up` or `lost` (silent for 10 s)."""
    return {"machines": fleet.status()}


@router.get("/workers")
async def list_workers(supervisor: SupervisorDep,
                       fleet: FleetDep) -> dict[str, list[dict[str, Any]]]:
    """Every worker, running or ended, oldest first (this machine's, then the others')."""
    return {"workers": [w.to_dict() for w in supervisor.workers.values()]
            + await fleet.workers(local=False)}


@router.post("/workers", status_code=201, openapi_extra=SPEC_SCHEMA)
async def start_worker(request: Request, supervisor: SupervisorDep,
                       fleet: FleetDep) -> dict[str, Any]:
    """Start a worker from a spec; 422 names a bad field, 409 a taken address or name.
    `machine` starts it on another machine of the fleet."""
    raw = await _json_body(request)
    if isinstance(raw, dict) and ("machine" in raw or SEP in str(raw.get("target", ""))):
        if fleet.machine(raw.get("machine")) is not fleet.local \
                or SEP in str(raw.get("target", "")):
            return await fleet.start(raw)
        raw = {k: v for k, v in raw.items() if k != "machine"}
    worker = await supervisor.start(raw)
    return worker.to_dict()


async def _json_body(request: Request, default: Any = None) -> Any:
    body = await request.body()
    if not body.strip() and default is not None:
        return default
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadSpec(
            "The body must be a JSON object such as {\"kind\": \"server\", \"port\": 1060}"
        ) from None


@router.get("/workers/{worker_id}")
async def get_worker(worker_id: str, supervisor: SupervisorDep,
                     fleet: FleetDep) -> dict[str, Any]:
    """One worker: state, local address, counters."""
    if SEP in worker_id:
        return await fleet.get(worker_id)
    return supervisor.get(worker_id).to_dict()


@router.delete("/workers/{worker_id}")
async def stop_worker(worker_id: str, supervisor: SupervisorDep,
                      fleet: FleetDep) -> dict[str, Any]:
    """Stop a worker: its task ends and its socket closes. It stays listed, `stopped`."""
    if SEP in worker_id:
        return await fleet.stop(worker_id)
    return (await supervisor.stop(worker_id)).to_dict()


@router.post("/workers/{worker_id}/pause")
async def pause_worker(worker_id: str, supervisor: SupervisorDep,
                       fleet: FleetDep) -> dict[str, Any]:
    """Pause a server (the book's Ctrl+Z): it stops reading; datagrams queue in the kernel."""
    if SEP in worker_id:
        return await fleet.call(worker_id, "pause")
    return supervisor.pause(worker_id).to_dict()


@router.post("/workers/{worker_id}/resume")
async def resume_worker(worker_id: str, supervisor: SupervisorDep,
                        fleet: FleetDep) -> dict[str, Any]:
    """Resume a paused server: it reads what waited and answers clients that may be gone."""
    if SEP in worker_id:
        return await fleet.call(worker_id, "resume")
    return supervisor.resume(worker_id).to_dict()


@router.get("/experiments")
async def list_experiments(experiments: ExperimentsDep) -> dict[str, list]:
    """Every impostor experiment run so far, with its verdicts."""
    return {"experiments": [experiments.to_dict(r) for r in experiments.runs.values()]}


@router.post("/experiments/impostor", status_code=201)
async def impostor(request: Request, experiments: ExperimentsDep) -> dict[str, Any]:
    """The four client modes side by side under one impostor: who is fooled?

    Body (optional): `{"forge": true}` forges the server's address (needs CAP_NET_RAW),
    `{"message": "FAKE"}` sets what the impostor says.
    """
    raw = await _json_body(request, default={})
    if not isinstance(raw, dict) or set(raw) - {"forge", "message"}:
        raise BadSpec("The body may only have 'forge' (true or false) and 'message' (text)")
    forge, message = raw.get("forge", False), raw.get("message", "FAKE")
    if not isinstance(forge, bool):
        raise BadSpec("'forge' must be true or false", field="forge")
    if not isinstance(message, str) or not 0 < len(message.encode()) <= 1000:
        raise BadSpec("'message' must be text of 1 to 1000 bytes", field="message")
    run = await experiments.impostor(forge=forge, message=message)
    return experiments.to_dict(run)


@router.get("/experiments/{run_id}")
async def get_experiment(run_id: str, experiments: ExperimentsDep) -> dict[str, Any]:
    """One experiment and who was fooled."""
    return experiments.to_dict(experiments.get(run_id))


@router.get("/workers/{worker_id}/options")
async def worker_options(worker_id: str, supervisor: SupervisorDep,
                         fleet: FleetDep) -> dict[str, list]:
    """The socket options of a live worker's socket, as the kernel holds them."""
    if SEP in worker_id:
        return {"options": await fleet.call(worker_id, "options")}
    return {"options": sockopts.read_all(supervisor.get(worker_id).sock)}


@router.post("/workers/{worker_id}/options")
async def set_worker_option(worker_id: str, request: Request,
                            supervisor: SupervisorDep, fleet: FleetDep) -> dict[str, Any]:
    """Set one option, `{"name": "SO_RCVBUF", "value": 4096}`; returns the kernel's real
    value afterwards (it doubles SO_RCVBUF and SO_SNDBUF)."""
    raw = await _json_body(request)
    if not isinstance(raw, dict) or set(raw) != {"name", "value"} \
            or not isinstance(raw["name"], str):
        raise BadSpec('The body must be {"name": "<option>", "value": <number or on/off>}')
    if SEP in worker_id:
        return await fleet.call(worker_id, "set_option", raw["name"], raw["value"])
    return sockopts.set_option(supervisor.get(worker_id).sock, raw["name"], raw["value"])


@router.get("/interfaces")
async def list_interfaces(settings: SettingsDep) -> dict[str, Any]:
    """Every interface with its state, MTU and addresses (netmask, broadcast)."""
    found = await asyncio.get_running_loop().run_in_executor(None, interfaces.interfaces)
    destinations = interfaces.broadcast_choices(settings.allow_limited_broadcast)
    return {"interfaces": [i.to_dict() for i in found],
            "broadcast": [{"address": a, "label": label} for a, label in destinations]}


@router.get("/ports/{name_or_number}")
async def port_lookup(name_or_number: str) -> dict[str, Any]:
    """A UDP service name or port number, both ways, with its range and the ephemeral range."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, ports.lookup, name_or_number)


@router.post("/experiments/binding", status_code=201)
async def binding(request: Request, binding: BindingDep) -> dict[str, Any]:
    """The binding explorer: which binds on one port conflict, which coexist, and which
    server a client reaches. Body (optional): `{"interface": "<an address of this machine>"}`
    is bound too (never sent to)."""
    raw = await _json_body(request, default={})
    if not isinstance(raw, dict) or set(raw) - {"interface"}:
        raise BadSpec("The body may only have 'interface' (an address of this machine)")
    interface = raw.get("interface")
    if interface is not None and not isinstance(interface, str):
        raise BadSpec("'interface' must be an address such as 192.168.1.5", field="interface")
    return await binding.run(interface=interface or None)


# `?machine=b` acts on machine b's own lab (its agent builds it); absent, on this machine's.
MachineQuery = Annotated[str | None, Query(description="a machine of the fleet (GET "
                                             "/api/machines); absent: the dashboard's own")]


@router.get("/lab")
async def get_lab(fleet: FleetDep, machine: MachineQuery = None) -> dict[str, Any]:
    """The virtual LAN: hosts (name, address, broadcast, mtu, subnet), router, subnets."""
    return await fleet.named(machine).lab()


@router.post("/lab", status_code=201)
async def build_lab(fleet: FleetDep, machine: MachineQuery = None) -> dict[str, Any]:
    """Build the default virtual LAN (needs CAP_NET_ADMIN; 403 says how to get it)."""
    return await fleet.named(machine).build_lab()


@router.delete("/lab")
async def delete_lab(fleet: FleetDep, machine: MachineQuery = None) -> dict[str, Any]:
    """Stop the workers on the lab and delete its namespaces."""
    return await fleet.named(machine).teardown_lab()


@router.post("/lab/scenarios/{name}", status_code=201)
async def lab_scenario(name: str, scenarios: LabScenariosDep, fleet: FleetDep,
                       machine: MachineQuery = None) -> dict[str, Any]:
    """Run a one-click lab scenario: exchange, broadcast, mtu, binding, multicast, ssm,
    snooping or all-nodes."""
    where = fleet.named(machine)
    if where is not fleet.local:
        return await where.lab_scenario(name)
    return await scenarios.run(name)


@router.get("/recipes")
async def list_recipes(recipes: RecipesDep) -> dict[str, list]:
    """The recipes (one per section of the chapter), from their data files."""
    return {"recipes": recipes.catalogue()}


@router.post("/recipes/{name}", status_code=201)
async def play_recipe(name: str, request: Request, recipes: RecipesDep,
                      supervisor: SupervisorDep) -> dict[str, Any]:
    """Start a recipe. `{"wait": true}` answers when every step has run; otherwise it plays in
    the background and `GET /api/recipes/runs/{id}` shows how far it got."""
    raw = await _json_body(request, default={})
    if not isinstance(raw, dict) or set(raw) - {"wait", "step"} \
            or not all(isinstance(v, bool) for v in raw.values()):
        raise BadSpec("The body may only have 'wait' (true: answer when done) and 'step' "
                      "(true: play only the first step), each true or false")
    run = recipes.start(name)
    if raw.get("step"):
        await recipes.next(run)
    elif raw.get("wait"):
        await recipes.play_all(run)
    else:
        supervisor.spawn(recipes.play_all(run), name=f"recipe {run.id}")
    return run.to_dict()


@router.get("/recipes/runs/{run_id}")
async def recipe_run(run_id: str, recipes: RecipesDep) -> dict[str, Any]:
    """A recipe run: each step with the book's words and what happened."""
    return recipes.get(run_id).to_dict()


@router.post("/recipes/runs/{run_id}/next")
async def recipe_next(run_id: str, recipes: RecipesDep) -> dict[str, Any]:
    """Play the next step of a run."""
    return (await recipes.next(recipes.get(run_id))).to_dict()


@router.delete("/recipes/runs/{run_id}")
async def recipe_stop(run_id: str, recipes: RecipesDep) -> dict[str, Any]:
    """Stop a run: its workers at once, its steps after the one in progress."""
    return (await recipes.stop(recipes.get(run_id))).to_dict()


@router.get("/workers/{worker_id}/events")
async def worker_events(worker_id: str, supervisor: SupervisorDep,
                        fleet: FleetDep) -> dict[str, list]:
    """A worker's kept events, oldest first."""
    if SEP in worker_id:
        return {"events": await fleet.events(worker_id)}
    return {"events": [e.to_dict() for e in supervisor.events(worker_id)]}


@router.websocket("/events")
async def events(websocket: WebSocket, supervisor: SupervisorDep) -> None:
    """Every event as JSON: `{"events": [...], "dropped": N}`, one message per batch."""
    await json_stream(websocket, supervisor, websocket.app.state.json_hub)
