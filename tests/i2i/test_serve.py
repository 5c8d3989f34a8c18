"""`i2i serve` end to end: a real uvicorn process on 127.0.0.1, a real embedded Qdrant Edge
collection built with a tiny random checkpoint, and an HTTP client. No mocks.

One server (module scope) answers the route and error tests; the persistence test runs
its own servers (kill -9, restart, SIGTERM) on its own workspace.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_IMAGE_BYTES = 20_000
# Generous timeouts: on a loaded shared machine a forward pass can take seconds.
http = httpx.Client(timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png(color: tuple[int, int, int] = (200, 30, 30), size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


class Server:
    """An `i2i serve` subprocess on a free port of 127.0.0.1."""

    def __init__(self, checkpoint: Path, workspace: Path, log: Path, *extra: str, api_key: str | None = KEY):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop("I2I_API_KEY", None)
        if api_key:
            env["I2I_API_KEY"] = api_key
        cmd = [sys.executable, "-m", "i2i.cli", "serve", "--checkpoint", str(checkpoint)]
        cmd += ["--workspace", str(workspace), "--port", str(self.port), *extra]
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if http.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not up after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 300.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._log_file.close()
        return code


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny random checkpoints (different models): runs a/best and b/best."""
    from train.checkpoint import save_checkpoint
    from train.model import build_model
    from train.testing import tiny_model_config

    root = tmp_path_factory.mktemp("serve-runs")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        save_checkpoint(build_model(tiny_model_config()), root / name / "best")
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def server(
    checkpoints: tuple[Path, Path], synth_platform: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server over 24 indexed synthetic notes; writes need the API key; small limits."""
    from indexer.backends import StoreSpec, open_store
    from indexer.job import index_notes
    from train.embed import load_embedder

    root = tmp_path_factory.mktemp("serve")
    notes = root / "notes.parquet"
    pl.read_parquet(synth_platform / "notes.parquet").head(24).write_parquet(notes)
    with open_store(StoreSpec(workspace=root / "ws")) as store:
        index_notes(notes, load_embedder(checkpoints[0]), store, image_root=synth_platform)
    srv = Server(
        checkpoints[0],
        root / "ws",
        root / "serve.log",
        "--max-batch",
        "4",
        "--batch-wait-ms",
        "5",
        "--queue-size",
        "8",
        "--max-notes-per-request",
        "8",
        "--max-image-bytes",
        str(MAX_IMAGE_BYTES),
        "--max-k",
        "20",
    ).wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output()
    assert "store flushed and closed" in srv.output()


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


def test_health_ready_openapi_metrics(server: Server, checkpoints: tuple[Path, Path]) -> None:
    from train.checkpoint import checkpoint_id

    assert http.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = http.get(server.url + "/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and body["points"] == 24
    assert body["model_id"] == body["collection_model_id"] == checkpoint_id(checkpoints[0] / "best")

    spec = http.get(server.url + "/openapi.json").json()
    assert {"/v1/related/{note_id}", "/v1/related", "/v1/notes/{note_id}", "/v1/notes", "/readyz"} <= set(
        spec["paths"]
    )
    assert {"put", "delete"} <= set(spec["paths"]["/v1/notes/{note_id}"])
    assert "multipart/form-data" in spec["paths"]["/v1/related"]["post"]["requestBody"]["content"]
    assert http.get(server.url + "/docs").status_code == 200

    http.get(server.url + "/v1/related/n000001")
    text = http.get(server.url + "/metrics").text
    assert 'i2i_http_requests_total{method="GET",route="/v1/related/{note_id}",status="200"}' in text
    assert (
        'i2i_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/related/{note_id}"}'
        in text
    )
    for name in ("i2i_embed_batch_size", "i2i_embed_queue_depth", "i2i_collection_points"):
        assert name in text


def test_related_by_id(server: Server) -> None:
    r = http.get(server.url + "/v1/related/n000003", params={"k": 5})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["note_id"] == "n000003"
    ids = [x["note_id"] for x in answer["related"]]
    assert len(ids) == 5 and "n000003" not in ids
    assert [x["rank"] for x in answer["related"]] == [1, 2, 3, 4, 5]
    scores = [x["score"] for x in answer["related"]]
    assert scores == sorted(scores, reverse=True)
    assert set(answer["related"][0]) == {"rank", "score", "note_id", "title"}  # `i2i related --json`
    assert len(http.get(server.url + "/v1/related/n000003").json()["related"]) == 10  # default k


def test_errors(server: Server) -> None:
    url = server.url
    msg = _error(http.get(url + "/v1/related/no-such-note"), 404, "not_found")
    assert "no-such-note" in msg
    _error(http.get(url + "/v1/related/n000003", params={"k": 0}), 422, "invalid")
    _error(http.get(url + "/v1/related/n000003", params={"k": 21}), 422, "invalid")  # --max-k 20
    _error(http.get(url + "/v1/nothing-here"), 404, "no_route")

    bad_json = b'{"title": "x", '
    headers = {**AUTH, "content-type": "application/json"}
    _error(http.put(url + "/v1/notes/x", content=bad_json, headers=headers), 400, "bad_json")
    _error(http.post(url + "/v1/notes", content=bad_json, headers=headers), 400, "bad_json")
    _error(http.post(url + "/v1/related", content=bad_json, headers=headers), 400, "bad_json")
    _error(http.put(url + "/v1/notes/x", content=b"x", headers={**AUTH, "content-type": "text/plain"}), 415,
           "unsupported_media_type")  # fmt: skip

    # The server opens no path a client names: an `image` field is refused.
    msg = _error(http.put(url + "/v1/notes/x", json={"image": "/etc/passwd"}, headers=AUTH), 422, "invalid")
    assert "image_base64" in msg

    big = os.urandom(MAX_IMAGE_BYTES + 1)
    b64 = base64.b64encode(big).decode()
    _error(http.put(url + "/v1/notes/x", json={"image_base64": b64}, headers=AUTH), 413, "image_too_large")
    files = {"image": ("big.png", big, "image/png")}
    _error(http.put(url + "/v1/notes/x", files=files, headers=AUTH), 413, "image_too_large")
    _error(http.post(url + "/v1/related", files=files), 413, "image_too_large")

    corrupt = base64.b64encode(_png()[:60]).decode()  # a truncated PNG
    _error(http.put(url + "/v1/notes/x", json={"image_base64": corrupt}, headers=AUTH), 422, "bad_image")
    files = {"image": ("x.png", b"not an image at all", "image/png")}
    _error(http.post(url + "/v1/related", files=files), 422, "bad_image")
    _error(http.post(url + "/v1/related", json={"image_base64": "%%%"}), 422, "bad_base64")
    _error(http.post(url + "/v1/related", json={"content": "x" * 20_001}), 422, "too_long")

    huge = b'{"notes": [' + b" " * 10_000_000 + b"]}"
    _error(http.post(url + "/v1/notes", content=huge, headers=headers), 413, "body_too_large")
    notes = [{"note_id": f"t{i}", "title": "t"} for i in range(9)]  # --max-notes-per-request 8
    _error(http.post(url + "/v1/notes", json={"notes": notes}, headers=AUTH), 413, "too_many_notes")
    dup = [{"note_id": "d", "title": "a"}, {"note_id": "d", "title": "b"}]
    _error(http.post(url + "/v1/notes", json={"notes": dup}, headers=AUTH), 422, "duplicate_id")
    _error(http.put(url + "/v1/notes/x", json={"note_id": "y"}, headers=AUTH), 422, "id_mismatch")
    _error(http.put(url + "/v1/notes/x", json={}, headers=AUTH), 422, "empty_note")
    _error(http.post(url + "/v1/related", json={"title": " ", "tags": [""]}), 422, "empty_note")
    blank = [{"note_id": "b1", "title": "b"}, {"note_id": "b2"}]
    _error(http.post(url + "/v1/notes", json={"notes": blank}, headers=AUTH), 422, "empty_note")

    # Missing or wrong key on write routes; reads stay open (no --auth-all).
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = http.put(url + "/v1/notes/x", json={"title": "x"}, headers=auth)
        _error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        _error(http.delete(url + "/v1/notes/n000001", headers=auth), 401, "unauthorized")
        _error(http.post(url + "/v1/notes", json={"notes": []}, headers=auth), 401, "unauthorized")
    assert http.get(url + "/v1/related/n000001").status_code == 200
    assert http.get(url + "/v1/related/x").status_code == 404  # nothing above was written
    assert http.get(url + "/v1/related/b1").status_code == 404  # not even the batch's valid note


def test_upsert_then_related_then_delete(server: Server) -> None:
    url = server.url
    note = {"title": "red bike at sunset", "content": "a ride by the sea #bike#", "tags": ["travel"]}
    image = _png((10, 200, 40))
    files = {"image": ("bike.png", image, "image/png")}
    form = {"title": note["title"], "content": note["content"], "tags": note["tags"]}

    # Related to an unseen note (not indexed by asking).
    r = http.post(url + "/v1/related", data={**form, "note_id": "fresh"}, files=files, params={"k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["note_id"] == "fresh" and len(r.json()["related"]) == 3
    _error(http.get(url + "/v1/related/fresh"), 404, "not_found")

    r = http.put(url + "/v1/notes/fresh", data=form, files=files, headers=AUTH)
    assert (r.status_code, r.json()) == (201, {"note_id": "fresh", "status": "created"})
    r = http.get(url + "/v1/related/fresh", params={"k": 5})  # searchable when PUT returned
    assert r.status_code == 200 and len(r.json()["related"]) == 5

    # The same note (JSON, image as base64) is its own nearest neighbour.
    body = {**note, "image_base64": base64.b64encode(image).decode()}
    top = http.post(url + "/v1/related", json=body, params={"k": 1}).json()["related"][0]
    assert top["note_id"] == "fresh" and top["title"] == note["title"]
    assert top["score"] == pytest.approx(1.0, abs=1e-4)

    # Idempotent by content hash: same content -> unchanged; new content -> updated.
    r = http.put(url + "/v1/notes/fresh", json=body, headers=AUTH)
    assert (r.status_code, r.json()["status"]) == (200, "unchanged")
    r = http.put(url + "/v1/notes/fresh", json={**body, "title": "blue bike"}, headers=AUTH)
    assert (r.status_code, r.json()["status"]) == (200, "updated")
    top = http.post(url + "/v1/related", json={**body, "title": "blue bike"}, params={"k": 1}).json()
    assert top["related"][0]["title"] == "blue bike"

    batch = [{"note_id": "b1", "title": "pasta"}, {"note_id": "fresh", "title": "blue bike", **note}]
    batch[1]["title"] = "blue bike"
    batch[1]["image_base64"] = body["image_base64"]
    r = http.post(url + "/v1/notes", json={"notes": batch}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [
        {"note_id": "b1", "status": "created"},
        {"note_id": "fresh", "status": "unchanged"},
    ]
    assert http.get(url + "/readyz").json()["points"] == 26

    for nid in ("fresh", "b1"):
        r = http.delete(url + f"/v1/notes/{nid}", headers=AUTH)
        assert r.json() == {"note_id": nid, "status": "deleted"}
        _error(http.get(url + f"/v1/related/{nid}"), 404, "not_found")
        _error(http.delete(url + f"/v1/notes/{nid}", headers=AUTH), 404, "not_found")
    ids = {x["note_id"] for x in http.get(url + "/v1/related/n000003", params={"k": 20}).json()["related"]}
    assert "fresh" not in ids and "b1" not in ids
    assert http.get(url + "/readyz").json()["points"] == 24


def test_queue_full_answers_503(server: Server) -> None:
    """Queue 8, batches of 4: concurrent requests of 8 notes cannot all be admitted."""
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        notes = [{"note_id": f"q{i}-{j}", "title": f"queue {i} {j}"} for j in range(8)]
        r = http.post(server.url + "/v1/notes", json={"notes": notes}, headers=AUTH, timeout=120)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert 200 in codes and 503 in codes, codes
    for r in results:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert "queue is full" in _error(r, 503, "overloaded")
    text = http.get(server.url + "/metrics").text
    rejected = next(line for line in text.splitlines() if line.startswith("i2i_embed_rejected_total"))
    assert float(rejected.split()[-1]) >= codes.count(503)
    # Batching happened: some forward pass embedded more than one note.
    le1 = next(line for line in text.splitlines() if line.startswith('i2i_embed_batch_size_bucket{le="1.0"}'))
    count = next(line for line in text.splitlines() if line.startswith("i2i_embed_batch_size_count"))
    assert float(le1.split()[-1]) < float(count.split()[-1])
    for r in results:  # clean up what was admitted
        for item in r.json().get("results", []):
            http.delete(server.url + f"/v1/notes/{item['note_id']}", headers=AUTH)


def test_persistence_kill9_sigterm_and_model_guard(checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    from core.errors import UserError
    from i2i.serve.server import build_service
    from i2i.serve.settings import ServeSettings
    from indexer.backends import StoreSpec, open_store
    from indexer.edge import META_FILE
    from retriever.related import related

    ws = tmp_path / "ws"
    log = tmp_path / "serve.log"
    first = Server(checkpoints[0], ws, log).wait_ready()  # empty workspace
    assert http.get(first.url + "/readyz").json()["points"] == 0  # collection created
    notes = [{"note_id": f"p{i}", "title": f"note {i}", "content": "word " * i} for i in range(8)]
    r = http.post(first.url + "/v1/notes", json={"notes": notes}, headers=AUTH)
    assert r.status_code == 200, r.text

    # kill -9 right after an acknowledged PUT: the note is there after a restart.
    r = http.put(
        first.url + "/v1/notes/acked", json={"title": "acknowledged", "content": "x y"}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    answer = http.get(first.url + "/v1/related/acked", params={"k": 5}).json()
    first.stop(signal.SIGKILL)

    second = Server(checkpoints[0], ws, log, "--max-batch", "1").wait_ready()
    assert http.get(second.url + "/readyz").json()["points"] == 9
    again = http.get(second.url + "/v1/related/acked", params={"k": 5}).json()
    assert [x["note_id"] for x in again["related"]] == [x["note_id"] for x in answer["related"]]

    # readyz reads the collection's model id live.
    meta_file = ws / "qdrant" / "notes" / META_FILE
    original = meta_file.read_text()
    meta_file.write_text(json.dumps({**json.loads(original), "model_id": "another-model"}))
    r = http.get(second.url + "/readyz")
    assert r.status_code == 503 and "another-model" in r.json()["problem"]
    meta_file.write_text(original)
    assert http.get(second.url + "/readyz").status_code == 200

    # SIGTERM while a request is in flight: it completes, then the server exits 0.
    box: dict[str, object] = {}

    def slow_batch() -> None:
        batch = [{"note_id": f"s{i}", "title": f"slow {i}", "content": "word " * i} for i in range(16)]
        box["response"] = http.post(
            second.url + "/v1/notes", json={"notes": batch}, headers=AUTH, timeout=120
        )
        box["done_at"] = time.monotonic()

    def forward_passes() -> float:
        text = http.get(second.url + "/metrics").text
        return float(
            next(x for x in text.splitlines() if x.startswith("i2i_embed_batch_size_count")).split()[-1]
        )

    before = forward_passes()
    sender = threading.Thread(target=slow_batch)
    sender.start()
    while forward_passes() == before:  # the batch is being embedded, one note per pass
        time.sleep(0.01)
    sigterm_at = time.monotonic()
    assert second.stop(signal.SIGTERM) == 0, second.output()
    sender.join()
    response = box["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, response
    assert box["done_at"] > sigterm_at  # it was in flight when the signal came
    assert "store flushed and closed" in second.output()

    # Restart persistence, in-process: everything acknowledged, the same answer.
    with open_store(StoreSpec(workspace=ws)) as store:
        assert store.count() == 9 + 16
        ranked = [r.to_dict() for r in related(store, "acked", 24)]
    local = [x for x in ranked if not x["note_id"].startswith("s")][:5]  # as before the slow batch
    assert [x["note_id"] for x in local] == [x["note_id"] for x in answer["related"]]
    for a, b in zip(local, answer["related"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)

    # A checkpoint of another model refuses the collection before serving (exit 2 in the CLI).
    with pytest.raises(UserError, match="refusing to mix"):
        build_service(ServeSettings(checkpoint=checkpoints[1], store=StoreSpec(workspace=ws)))
    with open_store(StoreSpec(workspace=ws)) as store:  # and left it closed for others
        assert store.count() == 25


def test_app_over_a_qdrant_client_store(checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    """The server-backend path (store calls in worker threads), with qdrant-client's local
    mode standing in for a Qdrant server, driven in-process through ASGI."""
    import asyncio

    from i2i.serve.app import create_app
    from i2i.serve.server import build_service
    from i2i.serve.settings import ServeSettings
    from indexer.backends import StoreSpec

    settings = ServeSettings(checkpoint=checkpoints[0], store=StoreSpec(local_path=tmp_path / "local"))
    service, status = build_service(settings)
    assert status == "created" and not service.inline_store
    app = create_app(settings, service)
    notes = [{"note_id": f"c{i}", "title": f"note {i}", "content": "word " * i} for i in range(4)]

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            r = await client.post("/v1/notes", json={"notes": notes})  # no key configured: open
            assert [x["status"] for x in r.json()["results"]] == ["created"] * 4
            r = await client.get("/v1/related/c1", params={"k": 2})
            assert r.status_code == 200 and len(r.json()["related"]) == 2
            assert "c1" not in {x["note_id"] for x in r.json()["related"]}
            assert (await client.get("/readyz")).json()["points"] == 4
            assert (await client.delete("/v1/notes/c1")).status_code == 200
            assert (await client.get("/v1/related/c1")).status_code == 404

    try:
        asyncio.run(main())
    finally:
        service.close()


def test_fast_related_path_answers_like_the_fastapi_route(
    checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    """`GET /v1/related/{id}`'s ASGI fast path against the FastAPI route it shortcuts, on
    one embedded Edge collection, with reads behind the key (`--auth-all`): the same
    status, headers and bytes for answers and errors alike, and the same metrics label."""
    import asyncio

    from i2i.serve.app import create_app, related_body
    from i2i.serve.fast_related import FastRelated
    from i2i.serve.guard import Receive, Scope, Send
    from i2i.serve.metrics import Metrics
    from i2i.serve.server import build_service
    from i2i.serve.settings import Limits, ServeSettings
    from indexer.backends import StoreSpec

    settings = ServeSettings(
        checkpoint=checkpoints[0],
        store=StoreSpec(workspace=tmp_path / "ws"),
        limits=Limits(max_k=5),
        api_key=KEY,
        auth_all=True,
    )
    service, _ = build_service(settings)
    assert service.inline_store  # the embedded store: the path the fast route serves
    fast_metrics, plain_metrics = Metrics(), Metrics()
    fast = create_app(settings, service, fast_metrics)
    plain = create_app(settings, service, plain_metrics, fast_related=False)
    notes = [{"note_id": f"f{i}", "title": f"note {i} é", "content": "word " * i} for i in range(8)]
    requests = [
        ("/v1/related/f1", AUTH),
        ("/v1/related/f1?k=3", AUTH),
        ("/v1/related/f2?k=5", AUTH),
        ("/v1/related/f1?k=6", AUTH),  # over --max-k: 422
        ("/v1/related/f1?k=0", AUTH),
        ("/v1/related/f1?k=x", AUTH),
        ("/v1/related/f1?k=3&k=4", AUTH),
        ("/v1/related/f1?other=1", AUTH),
        ("/v1/related/nope", AUTH),  # 404
        ("/v1/related/f1/", AUTH),  # no route
        ("/v1/related/f1", {}),  # 401
        ("/v1/related/f1", {"Authorization": "Bearer wrong"}),
        ("/v1/related/f1", {"Authorization": f"bearer {KEY}"}),  # the scheme is case-insensitive
        ("/v1/related/" + "x" * 300, AUTH),  # over the id limit
    ]

    async def main() -> None:
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve")
            for app in (fast, plain)
        ]
        async with clients[0] as a, clients[1] as b:
            r = await b.post("/v1/notes", json={"notes": notes}, headers=AUTH)
            assert r.status_code == 200, r.text
            for url, headers in requests:
                ra, rb = await a.get(url, headers=headers), await b.get(url, headers=headers)
                assert (ra.status_code, ra.content) == (rb.status_code, rb.content), url
                assert dict(ra.headers) == dict(rb.headers), url
            ok, _ = (
                await a.get("/v1/related/f1?k=3", headers=AUTH),
                await b.get("/v1/related/f1?k=3", headers=AUTH),
            )
            assert ok.status_code == 200 and len(ok.json()["related"]) == 3
            assert "f1" not in {x["note_id"] for x in ok.json()["related"]}

            # Which requests the fast path answers itself: with FastAPI's app replaced by
            # one that answers 599, those come back 200 and every other one 599.
            async def inner(scope: Scope, receive: Receive, send: Send) -> None:
                await send({"type": "http.response.start", "status": 599, "headers": []})
                await send({"type": "http.response.body", "body": b""})

            only = FastRelated(inner, service, settings.limits, route=None, render=related_body, api_key=KEY)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=only), base_url="http://s") as c:
                statuses = [(await c.get(url, headers=headers)).status_code for url, headers in requests]
            assert statuses == [200, 200, 200] + [599] * (len(requests) - 3)

    try:
        asyncio.run(main())
    finally:
        service.close()

    def counts(metrics: Metrics) -> set[str]:
        lines = metrics.render().decode().splitlines()
        return {line for line in lines if line.startswith("i2i_http_requests_total{")}

    # Both apps counted the same requests under the same labels (the POST went to `plain`).
    post = 'i2i_http_requests_total{method="POST",route="/v1/notes",status="200"} 1.0'
    assert counts(fast_metrics) == counts(plain_metrics) - {post}
