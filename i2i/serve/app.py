"""The FastAPI application of `i2i serve` (OpenAPI page at `/docs`, schema at `/openapi.json`).

Routes:
- `GET /v1/related/{note_id}?k=10`: the same JSON as `i2i related --json`; 404 unknown id.
- `POST /v1/related?k=10`: a note in the body (JSON with `image_base64`, or multipart
  with an `image` upload), embedded now, top-k returned; nothing is indexed.
- `PUT /v1/notes/{note_id}`, `POST /v1/notes` (`{"notes": [...]}`): embed and upsert;
  searchable when the call returns; "unchanged" notes (same content hash) are not
  embedded again. `DELETE /v1/notes/{note_id}`.
- `GET /healthz` (alive), `GET /readyz` (collection open and of the checkpoint's model),
  `GET /metrics` (Prometheus).

Every error is `{"error": {"code", "message"}}`. With an API key, write routes (and with
`auth_all` every route but the health checks) need `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.batching import BatcherClosed, QueueFull
from i2i.serve.errors import ApiError, error_body
from i2i.serve.fast_related import ROUTE as FAST_ROUTE
from i2i.serve.fast_related import FastRelated
from i2i.serve.guard import BodyLimit, bearer_guard
from i2i.serve.metrics import Metrics, RequestMetrics
from i2i.serve.notes_in import NoteIn, NotesIn, read_note, read_note_batch
from i2i.serve.service import NoteNotFound, NoteService
from i2i.serve.settings import ServeSettings
from retriever.related import Related

JSON = "application/json"


class RelatedItem(BaseModel):
    rank: int
    score: float
    note_id: str
    title: str


class RelatedOut(BaseModel):
    """Related notes, best first (the shape of `i2i related --json`)."""

    note_id: str | None
    related: list[RelatedItem]


class NoteStatus(BaseModel):
    note_id: str
    status: str  # created | updated | unchanged | deleted


class NotesOut(BaseModel):
    results: list[NoteStatus]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


def _multipart_schema() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "properties": {
            "note_id": text,
            "title": text,
            "content": text,
            "tags": {"type": "array", "items": text},
            "image": {"type": "string", "format": "binary"},
        },
    }


NOTE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": NoteIn.model_json_schema()},
            "multipart/form-data": {"schema": _multipart_schema()},
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 413, 415, 422, 503)
}


def related_body(note_id: str | None, results: list[Related]) -> bytes:
    body = {"note_id": note_id, "related": [r.to_dict() for r in results]}
    return json.dumps(body, ensure_ascii=False).encode()


def _related_json(note_id: str | None, results: list[Related]) -> Response:
    return Response(related_body(note_id, results), media_type=JSON)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _validation_text(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err.get("loc", ())) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(NoteNotFound)
    async def not_found(_: Request, exc: NoteNotFound) -> JSONResponse:
        return _error(404, "not_found", f"note {exc.args[0]!r} is not in the collection; check the id")

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        metrics.rejected.inc()
        return _error(503, "overloaded", f"{exc}; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(BatcherClosed)
    async def closing(_: Request, exc: BatcherClosed) -> JSONResponse:
        return _error(503, "shutting_down", str(exc), {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return _error(400, "bad_json", "the body is not valid JSON")
        return _error(422, "invalid", _validation_text(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "no_route", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


def create_app(
    settings: ServeSettings, service: NoteService, metrics: Metrics | None = None, fast_related: bool = True
) -> FastAPI:
    """The application over an open `service` (whose store and model are loaded).

    `fast_related` answers well-formed `GET /v1/related/{note_id}` requests in an ASGI
    middleware instead of FastAPI's routing (`i2i.serve.fast_related`; same bytes out).

    The lifespan flushes the store `settings.flush_interval_s` after writes, and on
    shutdown (after uvicorn has drained in-flight requests) finishes queued embeddings
    and closes the store.
    """
    metrics = metrics or Metrics()
    limits = settings.limits
    guard = [Depends(bearer_guard(settings.api_key))] if settings.api_key else []
    writer = guard
    reader = guard if settings.auth_all else []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def flush_periodically() -> None:
            while True:
                await asyncio.sleep(settings.flush_interval_s)
                if service.dirty:
                    await service.flush()

        flusher = asyncio.create_task(flush_periodically())
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="i2i",
        summary="Related notes (NoteLLM-2 embeddings in Qdrant) over HTTP.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.settings = settings
    metrics.track(lambda: service.batcher.depth, lambda: service.store.count())
    _install_error_handlers(app, metrics)

    K = Query(10, ge=1, le=limits.max_k, description=f"How many related notes (1..{limits.max_k}).")
    NOTE_ID = Path(min_length=1, max_length=limits.max_note_id_chars)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up and answering."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Model loaded, collection open, and the collection's model id equals the checkpoint's."""
        ready, details = service.readiness()
        return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], dependencies=reader, response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get(
        "/v1/related/{note_id}",
        tags=["related"],
        response_model=RelatedOut,
        responses=ERRORS,
        dependencies=reader,
    )
    async def related_by_id(note_id: str = NOTE_ID, k: int = K) -> Response:
        """Top-k notes related to an indexed note (itself excluded), best first."""
        return _related_json(note_id, await service.related_by_id(note_id, k))

    @app.post(
        "/v1/related",
        tags=["related"],
        response_model=RelatedOut,
        responses=ERRORS,
        openapi_extra=NOTE_BODY,
        dependencies=reader,
    )
    async def related_to_note(request: Request, k: int = K) -> Response:
        """Top-k notes related to the note in the body, embedded now and not indexed."""
        item = await read_note(request, limits)
        return _related_json(item.note["note_id"] or None, await service.related_to_note(item, k))

    @app.put(
        "/v1/notes/{note_id}",
        tags=["notes"],
        response_model=NoteStatus,
        responses={**ERRORS, 201: {"model": NoteStatus, "description": "created"}},
        openapi_extra=NOTE_BODY,
        dependencies=writer,
    )
    async def put_note(request: Request, note_id: str = NOTE_ID) -> JSONResponse:
        """Embed and upsert one note; searchable (and durable) when this returns."""
        item = await read_note(request, limits, note_id=note_id)
        (status,) = await service.put([item])
        return JSONResponse(
            {"note_id": note_id, "status": status}, status_code=201 if status == "created" else 200
        )

    @app.post("/v1/notes", tags=["notes"], response_model=NotesOut, responses=ERRORS, dependencies=writer)
    async def put_notes(batch: NotesIn) -> JSONResponse:
        """Embed and upsert a batch of notes (each with its `note_id`)."""
        items = await read_note_batch(batch, limits)
        statuses = await service.put(items)
        results = [{"note_id": i.note["note_id"], "status": s} for i, s in zip(items, statuses, strict=True)]
        return JSONResponse({"results": results})

    @app.delete(
        "/v1/notes/{note_id}",
        tags=["notes"],
        response_model=NoteStatus,
        responses=ERRORS,
        dependencies=writer,
    )
    async def delete_note(note_id: str = NOTE_ID) -> JSONResponse:
        """Remove a note from the collection; 404 if it is not there."""
        await service.delete(note_id)
        return JSONResponse({"note_id": note_id, "status": "deleted"})

    if fast_related:
        route = next(r for r in app.routes if getattr(r, "path", None) == FAST_ROUTE)
        api_key = settings.api_key if settings.auth_all else None
        app.add_middleware(
            FastRelated, service=service, limits=limits, route=route, render=related_body, api_key=api_key
        )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
