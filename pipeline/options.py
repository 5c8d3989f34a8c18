"""Option values of `mine-pairs` that the CLI needs without importing Polars or NumPy."""

from __future__ import annotations

WEIGHTINGS = ("users", "inverse-activity")
DEFAULT_MAX_EVENTS_PER_USER = 1000
DEFAULT_MEMORY_LIMIT = "4GB"

__all__ = ["DEFAULT_MAX_EVENTS_PER_USER", "DEFAULT_MEMORY_LIMIT", "WEIGHTINGS"]
