"""`i2i serve`: related notes over HTTP, and new notes searchable when the call returns.

- `settings`: what the server is told (store, checkpoint, limits, batching, auth).
- `service`: the note operations (related by id / to an unseen note, upsert, delete)
  over one embedder, one store and a dynamic batcher; knows nothing of HTTP.
- `notes_in`: request bodies (JSON with base64 images, or multipart uploads) to notes,
  with size limits and the safe image decoder.
- `guard`: API key (bearer token) and request body limits.
- `metrics`: Prometheus metrics (per-route requests and latency, batch sizes, queue,
  collection size).
- `app`: the FastAPI application (routes, errors, lifespan); `fast_related`: the ASGI
  fast path for well-formed `GET /v1/related/{id}` in front of it; `server`: uvicorn.
"""
