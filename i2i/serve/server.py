"""Start `i2i serve`: load the model once, open the collection, run uvicorn.

Everything that can fail for a user reason (no checkpoint, a collection of another
model, an embedded collection open in another process) fails here, before the port
opens, as a `UserError`. uvicorn handles SIGTERM / SIGINT: it stops accepting, waits
up to `graceful_timeout_s` for in-flight requests, then the app's lifespan finishes
queued embeddings and flushes and closes the store.

Imports torch and the web stack: the CLI imports this module only when `i2i serve` runs.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Callable
from types import FrameType

import torch
import uvicorn

from core.errors import UserError
from i2i.serve.app import create_app
from i2i.serve.metrics import Metrics
from i2i.serve.service import NoteService
from i2i.serve.settings import ServeSettings
from indexer.backends import open_store
from indexer.edge import EdgeStore
from train.embed import load_embedder


def build_service(settings: ServeSettings) -> tuple[NoteService, str]:
    """Load the embedder, open the store and the collection (created when missing).
    Returns the service and "created" or "opened"."""

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    embedder = load_embedder(settings.checkpoint, device=settings.device, precision=settings.precision)
    store = open_store(settings.store)
    try:
        service = NoteService(
            embedder,
            store,
            max_batch=settings.batching.max_batch,
            max_wait_s=settings.batching.max_wait_ms / 1000,
            max_queue=settings.batching.max_queue,
            inline_store=isinstance(store, EdgeStore),
        )
        status = service.open_collection()
    except BaseException:
        store.close()
        raise
    return service, status


def serve(settings: ServeSettings, log: Callable[[str], None] | None = None) -> None:
    """Run the server until SIGTERM / SIGINT (blocking)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    settings.validate()
    check_port_free(settings.host, settings.port)  # before minutes of model loading
    service, status = build_service(settings)
    metrics = Metrics()
    service.batcher.on_batch = metrics.on_batch
    try:
        app = create_app(settings, service, metrics)
    except BaseException:
        service.close()
        raise
    log(
        f"i2i serve: model {service.model_id} (dim {service.embedder.dim}); collection {status}: "
        f"{service.store.location}, {service.store.count():,} points; "
        f"batching up to {settings.batching.max_batch} notes, queue {settings.batching.max_queue}; "
        f"auth {'all routes' if settings.auth_all else 'write routes' if settings.api_key else 'off'}"
    )
    log(f"i2i serve: http://{settings.host}:{settings.port} (OpenAPI at /docs)")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        # Typed int, but uvicorn hands it to asyncio.wait_for, which takes float seconds.
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # type: ignore[arg-type]
        loop=_best("uvloop", "auto"),
        http=_best("httptools", "auto"),
    )
    GracefulServer(config).run()
    log("i2i serve: stopped; store flushed and closed")


class GracefulServer(uvicorn.Server):
    """uvicorn's server that, after a graceful SIGTERM / SIGINT shutdown, returns (exit
    code 0) instead of re-raising the signal on itself as uvicorn does."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def check_port_free(host: str, port: int) -> None:
    """`UserError` when `host:port` cannot be bound (taken, or not an address here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host"
            ) from None


def _best(module: str, fallback: str) -> str:
    """Use the faster uvicorn implementation when its package is installed."""
    return module if importlib.util.find_spec(module) is not None else fallback
