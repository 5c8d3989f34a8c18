"""`--qdrant-url`: which port is used, and one readable line when nothing answers."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from core.errors import UserError
from i2i.cli import app
from indexer.client import parse_url


@pytest.mark.parametrize(
    ("url", "host", "rest", "grpc", "https"),
    [
        ("http://localhost:6333", "localhost", 6333, 6334, False),
        ("http://localhost", "localhost", 6333, 6334, False),
        ("localhost:6334", "localhost", 6333, 6334, False),  # a gRPC port is taken as one
        ("https://q.example.com:6334", "q.example.com", 6333, 6334, True),
        ("http://10.0.0.5:8080", "10.0.0.5", 8080, 6334, False),
        ("grpc://10.0.0.5:7001", "10.0.0.5", 6333, 7001, False),
    ],
)
def test_ports(url: str, host: str, rest: int, grpc: int, https: bool) -> None:
    end = parse_url(url)
    assert (end.host, end.rest_port, end.grpc_port, end.https) == (host, rest, grpc, https)
    assert f"{host}:{grpc} (gRPC" in end.describe()


@pytest.mark.parametrize("url", ["http://x:notaport", "ftp://x", "http://"])
def test_malformed_urls_are_user_errors(url: str) -> None:
    with pytest.raises(UserError, match="is not a Qdrant address"):
        parse_url(url)


def test_nothing_listening_is_one_line_naming_the_port_tried() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(app, ["related", "n1", "--qdrant-url", f"grpc://127.0.0.1:{port}"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"cannot reach Qdrant at 127.0.0.1:{port} (gRPC" in lines[0]
