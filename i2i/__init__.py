"""i2i: item-to-item ("related notes") retrieval built on NoteLLM-2.

The `i2i` package holds the thin CLI and the few contracts every stage shares.
"""

__version__ = "0.1.0"
