"""Option defaults the CLI shows in `--help` without importing Polars, NumPy or PIL.

`pipeline.mine` and `pipeline.emoji` use (and re-export) these same values.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTINGS = ("users", "inverse-activity")
DEFAULT_MAX_EVENTS_PER_USER = 1000
DEFAULT_MEMORY_LIMIT = "4GB"

# i2i emoji: the system's Unicode data and colour font.
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
CLDR_COMMON = Path("/usr/share/unicode/cldr/common")
FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
DEFAULT_COLORS = 32
DEFAULT_SUBGROUP_SHARE = 0.5  # share of sessions that follow a subgroup (the rest: a colour cluster)
# Defaults sized so that mining (1h window) and a 0.6/0.1/0.3 split leave 300+ test queries.
DEFAULT_USERS = 3000
DEFAULT_EVENTS = 300_000
DEFAULT_SPLIT = (0.6, 0.1, 0.3)

__all__ = [
    "CLDR_COMMON",
    "DEFAULT_COLORS",
    "DEFAULT_EVENTS",
    "DEFAULT_MAX_EVENTS_PER_USER",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_SPLIT",
    "DEFAULT_SUBGROUP_SHARE",
    "DEFAULT_USERS",
    "EMOJI_TEST",
    "FONT",
    "WEIGHTINGS",
]
