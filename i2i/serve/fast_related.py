"""A fast path for `GET /v1/related/{note_id}`, the route an app calls on every page view.

FastAPI spends more CPU per request on this route than the store spends answering it
(dependency solving, parameter validation, the response class: about 0.17 ms against a
0.2 ms HNSW query, measured with `benchmarks/serve_load.py`'s in-process table). On 2
cores that CPU is the latency at concurrency 8 (Little's law), so this ASGI middleware
answers the plain, well-formed request itself and hands every other one to the FastAPI
application unchanged:

- handled here: `GET /v1/related/<id>` with no query string or exactly `k=<digits>`
  within 1..max_k, an id of 1..max_note_id_chars characters without `/`, the bearer key
  when reads need it, and an id that is in the collection;
- handed on: everything else, so every error (unknown id, bad or out-of-range `k`,
  missing key) and every other route is FastAPI's, with its one JSON error shape.

The answer is byte for byte the route's (`tests/i2i/test_serve.py` compares them), and
`scope["route"]` is set to the FastAPI route so the request metrics label it the same.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from i2i.serve.guard import ASGIApp, Receive, Scope, Send
from i2i.serve.service import NoteNotFound, NoteService
from i2i.serve.settings import Limits
from retriever.related import Related

PREFIX = "/v1/related/"
ROUTE = PREFIX + "{note_id}"
DEFAULT_K = 10
CONTENT_TYPE_JSON = b"application/json"


class FastRelated:
    """Answer well-formed `GET /v1/related/{note_id}` requests without FastAPI's routing."""

    def __init__(
        self,
        app: ASGIApp,
        service: NoteService,
        limits: Limits,
        route: Any,  # a Starlette route (None in a bare test)
        render: Callable[[str, list[Related]], bytes],
        api_key: str | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.max_k = limits.max_k
        self.max_id = limits.max_note_id_chars
        self.route = route  # the FastAPI route, for the metrics' route label
        self.render = render  # (note_id, results) -> JSON bytes, the route's own encoder
        self.expected_auth = b"Bearer " + api_key.encode() if api_key else None

    def _parse(self, scope: Scope) -> tuple[str, int] | None:
        """(note_id, k) for a request this path answers; None hands it on."""
        if scope["method"] != "GET" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        note_id = path[len(PREFIX) :]
        if not note_id or len(note_id) > self.max_id or "/" in note_id:
            return None
        query: bytes = scope["query_string"]
        k = DEFAULT_K
        if query:
            digits = query[2:]
            if not query.startswith(b"k=") or not digits.isdigit() or len(digits) > 6:
                return None
            k = int(digits)
            if not 1 <= k <= self.max_k:
                return None
        if self.expected_auth is not None and not self._authorised(scope):
            return None
        return note_id, k

    def _authorised(self, scope: Scope) -> bool:
        assert self.expected_auth is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.expected_auth)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parsed = self._parse(scope) if scope["type"] == "http" else None
        if parsed is None:
            await self.app(scope, receive, send)
            return
        note_id, k = parsed
        try:
            results = await self.service.related_by_id(note_id, k)
        except NoteNotFound:
            await self.app(scope, receive, send)  # FastAPI answers the 404
            return
        scope["route"] = self.route
        body = self.render(note_id, results)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", CONTENT_TYPE_JSON)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
