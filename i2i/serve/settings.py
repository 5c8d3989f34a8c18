"""What `i2i serve` is told: where the collection and the checkpoint are, and its limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from indexer.backends import StoreSpec

API_KEY_ENV = "I2I_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Limits:
    """Per-request limits; requests over them get 413 (bytes) or 422 (the rest)."""

    max_k: int = 100
    max_image_bytes: int = 4 * 1024 * 1024
    max_text_chars: int = 20_000  # title + content + tags of one note
    max_tags: int = 64
    max_notes_per_request: int = 64
    max_note_id_chars: int = 256

    @property
    def max_body_bytes(self) -> int:
        """A whole request: base64 grows images by 4/3, plus text and framing."""
        per_note = self.max_image_bytes * 4 // 3 + 4 * self.max_text_chars + 4096
        return per_note * self.max_notes_per_request if self.max_notes_per_request > 1 else per_note


@dataclass(frozen=True)
class Batching:
    """Dynamic batching of embeddings (see `core.batching`); `max_batch=1` turns it off."""

    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256


@dataclass(frozen=True)
class ServeSettings:
    """Everything `create_app` needs. `api_key` None: no authentication."""

    checkpoint: Path
    store: StoreSpec
    device: str | None = None
    precision: str = "auto"  # embedding precision (`train.embed.NoteEmbedder`)
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    host: str = "127.0.0.1"
    port: int = 8000
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)
    api_key: str | None = None
    auth_all: bool = False  # True: reads need the key too (health checks never do)
    flush_interval_s: float = 30.0
    graceful_timeout_s: float = 30.0

    def validate(self) -> None:
        """`UserError` for settings that cannot work together."""
        b, lim = self.batching, self.limits
        if lim.max_notes_per_request > b.max_queue:
            raise UserError(
                f"--max-notes-per-request {lim.max_notes_per_request} exceeds --queue-size {b.max_queue}: "
                "such a request could never be admitted; raise --queue-size or lower the limit"
            )
        if self.auth_all and not self.api_key:
            raise UserError(f"--auth-all needs an API key: set {API_KEY_ENV}")
        if self.api_key is None and self.host not in LOOPBACK:
            raise UserError(
                f"listening on {self.host} without an API key would let anyone on the network write "
                f"notes; set {API_KEY_ENV} (clients send it as a bearer token) or use --host 127.0.0.1"
            )
        if not 0 < self.port < 65536:
            raise UserError(f"--port must be in 1..65535, got {self.port}")


def api_key_from_env() -> str | None:
    """The API key clients must send (`I2I_API_KEY`), or None when unset or empty."""
    return os.environ.get(API_KEY_ENV) or None
