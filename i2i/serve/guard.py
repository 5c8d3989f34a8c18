"""Who may call, and how much they may send.

- `BodyLimit`: an ASGI middleware refusing bodies over a byte limit with 413, from the
  `Content-Length` header when there is one, else while the body streams in.
- `bearer_guard(key)`: a FastAPI dependency requiring `Authorization: Bearer <key>`
  (constant-time comparison); 401 otherwise.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from i2i.serve.errors import ApiError, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _too_large(limit: int) -> str:
    return f"the request body exceeds {limit:,} bytes; send fewer or smaller notes"


class BodyLimit:
    """Refuse HTTP request bodies larger than `max_bytes` (413, JSON error body)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _send_json(send, 413, error_body("body_too_large", _too_large(self.max_bytes)))
                    return
                break
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, "body_too_large", _too_large(self.max_bytes))
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


_bearer = HTTPBearer(auto_error=False, description="The server's I2I_API_KEY as a bearer token.")


def bearer_guard(api_key: str) -> Callable[..., Awaitable[None]]:
    """A dependency that requires `api_key` as the bearer token.

    (A coroutine: FastAPI would run a plain function in a worker thread, a thread hop on
    every request.)"""
    expected = api_key.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:  # noqa: B008
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong API key; send the header `Authorization: Bearer $I2I_API_KEY`",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
