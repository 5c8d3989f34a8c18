"""i2i: item-to-item ("related notes") retrieval built on NoteLLM-2.

The `i2i` package is the top floor: the thin CLI (`i2i.cli`), the demo and the HTTP
service. Libraries (`core`, `pipeline`, `train`, `indexer`, `retriever`) never import it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("i2i")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
