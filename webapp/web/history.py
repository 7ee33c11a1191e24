"""History and export: the JSON routes under /api/history and the history page under /history.

The app calls two things: `running(app, supervisor, data_dir, cap=…)` in its lifespan (opens
the store and records this run as a session) and `app.include_router(history.router)`.
"""

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.requests import HTTPConnection

from webapp.engine import EngineError, Supervisor
from webapp.engine.errors import BadSpec
from webapp.engine.history import (
    FILENAME, SCHEMA_VERSION, HistoryStore, HistoryUnavailable, UnknownHistory, export,
)
from webapp.engine.history.datagrams import DATAGRAM_TYPES
from webapp.engine.history.recorder import Recorder
from webapp.fleet.wire import SEP
from webapp.web.deps import RendererDep, SupervisorDep

log = logging.getLogger("udplab")
router = APIRouter(tags=["history"])
# An import is written in batches of this many lines (or bytes), each parsed and written in
# the store's thread while the next is read: memory stays flat whatever the file's size.
# Small batches hand the interpreter back to the event loop often: on a busy machine, 2000
# lines a batch gave /api/health a p95 of 100 ms during a 50 MiB import, 500 gave 25-40 ms.
BATCH_LINES = 500
BATCH_BYTES = 256 * 1024


@asynccontextmanager
async def running(app: FastAPI, supervisor: Supervisor, data_dir: Path, *,
                  cap: int = 10_000, interval: float = 0.5):
    """Record this app run as a session of the history in `data_dir` while the block runs.

    A database that cannot be used (a newer schema, not a database) leaves history off with a
    warning that names the file and the fix; the dashboard itself still starts."""
    app.state.history = None
    app.state.history_error = None
    path = Path(data_dir) / FILENAME
    loop = asyncio.get_running_loop()
    try:
        store = await loop.run_in_executor(None, lambda: HistoryStore(path, cap=cap))
    except HistoryUnavailable as exc:
        log.warning("history is off: %s", exc.message)
        app.state.history_error = exc.message
        yield None
        return
    if store.notice:  # the History page and GET /api/history say it too
        log.warning("history: %s", store.notice)
    if 0 < store.migrated_from < SCHEMA_VERSION:
        log.info("history: migrated %s from schema version %d to %d", path,
                 store.migrated_from, SCHEMA_VERSION)
    async with Recorder(supervisor, store, interval=interval) as recorder:
        app.state.history = recorder
        try:
            yield recorder
        finally:
            # Stop the workers before the last write, so their final state and `stopped`
            # events are kept (the supervisor's own stop_all then finds nothing to do).
            await supervisor.stop_all()
            app.state.history = None


def _recorder(conn: HTTPConnection) -> Recorder:
    recorder = getattr(conn.app.state, "history", None)
    if recorder is None:
        raise HistoryUnavailable(getattr(conn.app.state, "history_error", None)
                                 or "History is not running in this app")
    return recorder


HistoryDep = Annotated[Recorder, Depends(_recorder)]


async def _read(recorder: Recorder, fn, *args: Any) -> Any:
    """Write what is pending, then read: what the page shows is never behind the dashboard."""
    await recorder.flush()
    return await recorder.call(fn, *args)


# --- JSON -------------------------------------------------------------------------------

@router.get("/api/history")
async def list_history(recorder: HistoryDep, q: str = "") -> dict[str, Any]:
    """Past workers grouped by session, newest session first; `?q=` keeps the workers whose
    id, kind, spec or any event message contains it."""
    sessions = await _read(recorder, lambda: recorder.store.sessions(
        q.strip(), current=recorder.session))
    return {"current": recorder.session, "sessions": sessions,
            "notice": recorder.store.notice}


@router.get("/api/history/{history_id:int}")
async def get_history(history_id: int, recorder: HistoryDep) -> dict[str, Any]:
    """One worker of the history: spec, state changes, counters and kept events (oldest
    first); `events_dropped` counts the older events let go past the cap."""
    return await _read(recorder, recorder.store.worker, history_id)


@router.delete("/api/history/{history_id:int}")
async def delete_history(history_id: int, recorder: HistoryDep) -> dict[str, Any]:
    """Forget one worker of the history, events and all."""
    await _read(recorder, recorder.store.delete_worker, history_id)
    return {"deleted": history_id}


@router.delete("/api/history")
async def delete_all_history(recorder: HistoryDep, session: int | None = None
                             ) -> dict[str, Any]:
    """Forget every session, or `?session=N` only; this run's session stays, emptied."""
    gone = await _read(recorder, lambda: recorder.store.delete_all(
        session, keep=recorder.session))
    return {"deleted": gone}


@router.post("/api/history/{history_id:int}/run", status_code=201)
async def run_again(history_id: int, recorder: HistoryDep,
                    supervisor: SupervisorDep) -> dict[str, Any]:
    """Start a new worker with the same spec as this one of the history."""
    return (await _run_again(history_id, recorder, supervisor)).to_dict()


async def _run_again(history_id: int, recorder: Recorder, supervisor: Supervisor):
    worker = await recorder.call(lambda: recorder.store.worker(history_id, events=False))
    spec = dict(worker["spec"])
    if not spec or worker["kind"] == "unknown":
        raise BadSpec(f"Worker {history_id} of the history has no spec to run again "
                      "(it came from an import of bare events)")
    if spec.get("name") in supervisor.workers:
        spec["name"] = None  # the name is taken by the worker being rerun: take a fresh id
    return await supervisor.start(spec)


MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
         "pcapng": "application/vnd.tcpdump.pcap"}


def _export(fmt: str, workers: list[dict[str, Any]], session: dict[str, Any] | None) -> bytes:
    if fmt == "jsonl":
        return "".join(export.jsonl(workers, session)).encode()
    if fmt == "csv":
        return export.to_csv(workers).encode()
    return export.to_pcapng(workers)


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SHOWN_NAME = 100  # characters of a name a download's file name carries


def _download(fmt: str, body: bytes, name: str) -> Response:
    """An attachment named `udplab-<slug>.<fmt>`, the slug safe in any header and any file
    system; the real name (a history may hold names from before the import checked them)
    goes percent-encoded in RFC 6266's `filename*`, so it can steer nothing."""
    name = name[:_SHOWN_NAME]
    slug = _UNSAFE.sub("-", name).strip("-") or "export"
    real = quote(f"udplab-{name}.{fmt}", safe="")
    return Response(body, media_type=MEDIA[fmt], headers={
        "Content-Disposition":
            f"attachment; filename=\"udplab-{slug}.{fmt}\"; filename*=UTF-8''{real}",
        "Cache-Control": "no-store"})


def _check_format(fmt: str) -> None:
    if fmt not in MEDIA:
        raise BadSpec(f"Unknown export format {fmt!r}: use jsonl, csv or pcapng", field="format")


@router.get("/api/history/{history_id:int}/export.{fmt}")
async def export_worker(history_id: int, fmt: str, recorder: HistoryDep) -> Response:
    """One worker as JSON Lines, CSV or pcapng (its datagrams as IPv4/IPv6 + UDP packets)."""
    _check_format(fmt)

    def build():
        worker = recorder.store.worker(history_id)
        return worker, _export(fmt, [worker], recorder.store.session(worker["session"]))
    worker, body = await _read(recorder, build)
    return _download(fmt, body, f"{worker['worker']}-{history_id}")


@router.get("/api/workers/{worker_id}/export.{fmt}")
async def export_live_worker(worker_id: str, fmt: str, recorder: HistoryDep,
                             supervisor: SupervisorDep) -> Response:
    """A worker of this run, exported from the history (its card's download links); another
    machine's worker (`b:client-1`) too, from what the dashboard recorded of it, so its
    downloads work while that machine is lost."""
    _check_format(fmt)
    if SEP in worker_id:
        history_id = await recorder.remote_history_id(worker_id)
    else:
        history_id = await recorder.history_id(supervisor.get(worker_id))
    if history_id is None:
        raise UnknownHistory(f"Worker {worker_id} is not in the history yet: try again in a "
                             "second" + (" (check the id on its card: the machine's name, "
                                         "a colon, the worker's)" if SEP in worker_id else ""))
    return await export_worker(history_id, fmt, recorder)


@router.get("/api/history/sessions/{session_id:int}/export.{fmt}")
async def export_session(session_id: int, fmt: str, recorder: HistoryDep) -> Response:
    """Every worker of one session as JSON Lines, CSV or pcapng."""
    _check_format(fmt)

    def build():
        session = recorder.store.session(session_id)
        return _export(fmt, recorder.store.session_workers(session_id), session)
    return _download(fmt, await _read(recorder, build), f"session-{session_id}")


@router.post("/api/history/import", status_code=201)
async def import_history(request: Request, recorder: HistoryDep) -> dict[str, Any]:
    """Add a JSON Lines export (the body) to the history as a new, imported session."""
    return await _import(_limited(request.stream(), _import_limit(request)), recorder,
                         "imported")


def _import_limit(request: Request) -> int:
    """Bytes one import may carry: `--max-import` (the Guard refuses a larger body with 413
    before it is read; this holds for a body whose length was not announced, too)."""
    return request.app.state.settings.max_import_body


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The chunks, refused once more than `limit` bytes came."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise BadSpec(f"The import is larger than {limit // 2**20} MiB (--max-import): "
                          "export fewer workers at a time", field="body")
        yield chunk


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The body's lines (without their newlines) in batches, as it arrives; never more than
    a batch and one line held."""
    pending, batch, size = b"", [], 0
    async for chunk in chunks:
        *whole, pending = (pending + chunk).split(b"\n")
        if len(pending) > export.MAX_LINE:  # a line with no end in sight
            whole.append(pending)
            pending = b""
        for line in whole:
            batch.append(line.rstrip(b"\r"))
            size += len(line)
            if len(batch) >= BATCH_LINES or size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
    if pending:
        batch.append(pending.rstrip(b"\r"))
    if batch:
        yield batch


async def _import(chunks: AsyncIterator[bytes], recorder: Recorder,
                  label: str) -> dict[str, Any]:
    """Stream an export into the history: each batch of lines is parsed and written in the
    store's thread (the event loop only splits lines), into a session that shows only once
    the last line is in; a bad line forgets what came before it."""
    reader = export.ImportReader()
    store = recorder.store
    ids: dict[int, None] = {}  # the imported workers' history ids, in order

    def write(lines: list[bytes]) -> None:
        for line in lines:
            reader.feed(line)
        records = reader.take()
        store.import_batch(session, records)
        for r in records:
            ids[r.id] = None
            r.states, r.events, r.dropped = [], [], 0

    def finish() -> str:
        reader.finish()
        name, original = label, reader.session
        if original and "started" in original:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(original["started"]))
            name = f"{label}: session {original.get('id', '?')} of {when}"
        store.end_import(session, reader.started, reader.ended, name)
        return name

    session = await recorder.call(store.begin_import, label)
    try:
        async for lines in _lines(chunks):
            await recorder.call(write, lines)
        name = await recorder.call(finish)
    except BaseException:
        await recorder.call(store.abort_import, session)
        raise
    return {"session": session, "label": name, "workers": list(ids)}


async def _chunks(upload: Any) -> AsyncIterator[bytes]:
    while hasattr(upload, "read") and (chunk := await upload.read(256 * 1024)):
        yield chunk


# --- page -------------------------------------------------------------------------------

def _page(renderer, template: str, *, request: Request, status: int = 200,
          **context: Any) -> HTMLResponse:
    # The read-only viewer is shown no button it may not press (Run again, Delete, Import).
    viewer = getattr(request.state, "udplab_auth", None) == "viewer"
    body = renderer.env.get_template(template).render(viewer=viewer, **context)
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _unavailable(request: Request, renderer) -> HTMLResponse | None:
    if getattr(request.app.state, "history", None) is not None:
        return None
    return _page(renderer, "history.html", request=request, status=503, sessions=[], q="",
                 error=getattr(request.app.state, "history_error", None)
                 or "History is not running in this app")


@router.get("/history", include_in_schema=False)
async def history_page(request: Request, renderer: RendererDep, q: str = "",
                       done: str = "") -> HTMLResponse:
    """Past experiments grouped by session, with a search box."""
    if (off := _unavailable(request, renderer)) is not None:
        return off
    recorder: Recorder = request.app.state.history
    sessions = await _read(recorder, lambda: recorder.store.sessions(
        q.strip(), current=recorder.session))
    return _page(renderer, "history.html", request=request, sessions=sessions, q=q, done=done,
                 error=None, notice=recorder.store.notice)


@router.get("/history/{history_id:int}", include_in_schema=False)
async def history_worker_page(history_id: int, request: Request,
                              renderer: RendererDep) -> HTMLResponse:
    """One worker of the history, read-only: spec, states, counters, ladder and event log."""
    if (off := _unavailable(request, renderer)) is not None:
        return off
    recorder: Recorder = request.app.state.history
    try:
        worker = await _read(recorder, recorder.store.worker, history_id)
    except EngineError as exc:
        return _page(renderer, "history.html", request=request, status=exc.status,
                     sessions=[], q="", error=exc.message)
    ladder = [e for e in worker["events"] if e["type"] in DATAGRAM_TYPES and e.get("peer")]
    return _page(renderer, "history_worker.html", request=request, w=worker, ladder=ladder,
                 outgoing=DATAGRAM_TYPES, error=request.query_params.get("error"))


def _back(request: Request, fallback: str) -> str:
    # Only our own paths: never redirect to whatever a form field says.
    target = request.query_params.get("back", "")
    return target if target.startswith("/history") and "//" not in target else fallback


@router.post("/history/{history_id:int}/run", include_in_schema=False)
async def run_again_from_page(history_id: int, request: Request,
                              supervisor: SupervisorDep) -> Response:
    """A "Run again" button: start a worker with the same spec, then show the dashboard."""
    recorder = _recorder(request)
    try:
        worker = await _run_again(history_id, recorder, supervisor)
    except EngineError as exc:
        if request.headers.get("hx-request") == "true":
            return HTMLResponse(Markup('<p class="error">{}</p>').format(exc.message),
                                status_code=exc.status)
        return RedirectResponse(f"/history/{history_id}?error={quote(exc.message)}",
                                status_code=303)
    if request.headers.get("hx-request") == "true":
        return HTMLResponse(Markup('<p class="ok">Started <a href="/#worker-{0}">{0}</a>.</p>')
                            .format(worker.id))
    return RedirectResponse(f"/#worker-{quote(worker.id)}", status_code=303)


@router.post("/history/{history_id:int}/delete", include_in_schema=False)
async def delete_from_page(history_id: int, request: Request) -> Response:
    """A worker's Delete button."""
    recorder = _recorder(request)
    await _read(recorder, recorder.store.delete_worker, history_id)
    return RedirectResponse(_back(request, "/history?done=deleted"), status_code=303)


@router.post("/history/sessions/{session_id:int}/delete", include_in_schema=False)
async def delete_session_from_page(session_id: int, request: Request) -> Response:
    """A session's Delete button (this run's session is emptied, not removed)."""
    recorder = _recorder(request)
    await _read(recorder, lambda: recorder.store.delete_all(session_id, keep=recorder.session))
    return RedirectResponse("/history?done=deleted", status_code=303)


@router.post("/history/import", include_in_schema=False)
async def import_from_page(request: Request, renderer: RendererDep) -> Response:
    """The page's import form: upload a .jsonl export."""
    recorder = _recorder(request)
    form = await request.form(max_part_size=_import_limit(request))
    upload = form.get("file")  # spooled to a temporary file: read back in chunks
    try:
        await _import(_limited(_chunks(upload), _import_limit(request)), recorder,
                      f"imported from {getattr(upload, 'filename', '') or 'a file'}"[:200])
    except EngineError as exc:
        sessions = await _read(recorder, lambda: recorder.store.sessions(
            "", current=recorder.session))
        return _page(renderer, "history.html", request=request, status=exc.status,
                     sessions=sessions, q="", error=exc.message)
    return RedirectResponse("/history?done=imported", status_code=303)
