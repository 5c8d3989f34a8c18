"""Request bodies to notes: JSON (image as base64) or multipart (image as an upload).

Limits (`Limits`) are checked before anything expensive: image bytes (413), text length,
tag count and note ids (422); a note with no title, content, tags or image is refused
(422). Images are decoded from the bytes sent with the safe loader
(`core.images.load_image_bytes`: size-capped, never raising); one that does not decode
is refused (422). A note never carries a path: the server opens no file a client names
(an `image` field is an unknown field, 422).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from core.contracts import merge_tags
from core.images import load_image_bytes
from i2i.serve.errors import ApiError
from i2i.serve.service import IncomingNote
from i2i.serve.settings import Limits

# Decode at most this many pixels on the long side: the model's input is far smaller.
DECODE_MAX_SIDE = 512


class NoteIn(BaseModel):
    """A note in a JSON body. `image_base64`: the image file's bytes, base64 (a
    `data:image/...;base64,` prefix is accepted)."""

    model_config = ConfigDict(extra="forbid")

    note_id: str | None = Field(default=None, min_length=1)
    title: str = ""
    content: str = ""
    tags: list[str] = Field(default_factory=list)
    image_base64: str | None = None


class NotesIn(BaseModel):
    """A batch of notes for `POST /v1/notes`; each needs its `note_id`."""

    model_config = ConfigDict(extra="forbid")

    notes: list[NoteIn]


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "body"
        msg = (
            "unknown field (send images as image_base64 or a multipart upload)"
            if err["type"] == "extra_forbidden"
            else err["msg"]
        )
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON ({exc})") from None


def _check_text(note: NoteIn, limits: Limits, where: str) -> None:
    if note.note_id is not None and len(note.note_id) > limits.max_note_id_chars:
        raise ApiError(
            422,
            "too_long",
            f"{where}note_id has {len(note.note_id)} characters; at most {limits.max_note_id_chars}",
        )
    chars = len(note.title) + len(note.content) + sum(len(t) for t in note.tags)
    if chars > limits.max_text_chars:
        raise ApiError(
            422,
            "too_long",
            f"{where}title + content + tags have {chars} characters; at most {limits.max_text_chars} "
            "(the server's --max-text-chars)",
        )
    if len(note.tags) > limits.max_tags:
        raise ApiError(422, "too_many_tags", f"{where}{len(note.tags)} tags; at most {limits.max_tags}")


def _image_bytes_from_base64(text: str, limits: Limits, where: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) * 3 // 4 > limits.max_image_bytes + 3:
        raise ApiError(413, "image_too_large", _too_large(len(text) * 3 // 4, limits, where))
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_base64", f"{where}image_base64 is not valid base64") from None


def _too_large(size: int, limits: Limits, where: str) -> str:
    return (
        f"{where}image has about {size:,} bytes; at most {limits.max_image_bytes:,} "
        "(the server's --max-image-bytes); send a smaller image"
    )


async def _incoming(note: NoteIn, data: bytes | None, limits: Limits, where: str = "") -> IncomingNote:
    _check_text(note, limits, where)
    if data is None and not (note.title.strip() or note.content.strip() or any(t.strip() for t in note.tags)):
        raise ApiError(
            422, "empty_note", f"{where}the note has no title, content, tags or image; send at least one"
        )
    image = None
    if data is not None:
        if len(data) > limits.max_image_bytes:
            raise ApiError(413, "image_too_large", _too_large(len(data), limits, where))
        decoded, ok = await anyio.to_thread.run_sync(load_image_bytes, data, DECODE_MAX_SIDE)
        if not ok:
            raise ApiError(
                422,
                "bad_image",
                f"{where}the image does not decode (not an image, truncated, or too many pixels)",
            )
        image = decoded
    as_dict = {
        "note_id": note.note_id or "",
        "title": note.title,
        "content": note.content,
        "tags": merge_tags(note.tags, note.content),
        "image": None,  # never a path: the image, if any, travels beside the note
    }
    return IncomingNote(as_dict, image, data)


async def _from_multipart(request: Request, limits: Limits) -> tuple[NoteIn, bytes | None]:
    try:
        form = await request.form(
            max_files=1, max_fields=limits.max_tags + 8, max_part_size=4 * limits.max_text_chars
        )
    except Exception as exc:  # malformed multipart, too many parts
        raise ApiError(400, "bad_multipart", f"the multipart body does not parse ({exc})") from None
    data = None
    fields: dict[str, Any] = {"tags": []}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "image":
                raise ApiError(422, "bad_field", f"file field {key!r}; the only file field is 'image'")
            data = await value.read(limits.max_image_bytes + 1)
            if len(data) > limits.max_image_bytes:
                raise ApiError(413, "image_too_large", _too_large(len(data), limits, ""))
        elif key == "tags":
            fields["tags"].append(value)
        else:
            fields[key] = value
    try:
        return NoteIn.model_validate(fields), data
    except ValidationError as exc:
        raise ApiError(422, "invalid", _validation_message(exc)) from None


async def read_note(request: Request, limits: Limits, note_id: str | None = None) -> IncomingNote:
    """One note from a JSON or multipart body. `note_id` (from the URL) must match the
    body's if both are given."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        note, data = await _from_multipart(request, limits)
    elif kind in ("application/json", ""):
        try:
            note = NoteIn.model_validate(_json(await request.body()))
        except ValidationError as exc:
            raise ApiError(422, "invalid", _validation_message(exc)) from None
        data = _image_bytes_from_base64(note.image_base64, limits, "") if note.image_base64 else None
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {kind!r}; send application/json or multipart/form-data",
        )
    if note_id is not None:
        if note.note_id is not None and note.note_id != note_id:
            raise ApiError(
                422, "id_mismatch", f"body note_id {note.note_id!r} differs from the URL's {note_id!r}"
            )
        note = note.model_copy(update={"note_id": note_id})
    return await _incoming(note, data, limits)


async def read_note_batch(batch: NotesIn, limits: Limits) -> list[IncomingNote]:
    """The notes of a parsed `{"notes": [...]}` body: ids required and unique, at most
    `max_notes_per_request`."""
    if not batch.notes:
        raise ApiError(422, "empty", "notes is empty; send at least one note")
    if len(batch.notes) > limits.max_notes_per_request:
        raise ApiError(
            413,
            "too_many_notes",
            f"{len(batch.notes)} notes in one request; at most {limits.max_notes_per_request}; "
            "split the batch",
        )
    seen: set[str] = set()
    out = []
    for i, note in enumerate(batch.notes):
        where = f"notes.{i}: "
        if not note.note_id:
            raise ApiError(422, "invalid", f"{where}note_id is required")
        if note.note_id in seen:
            raise ApiError(422, "duplicate_id", f"{where}note_id {note.note_id!r} appears twice")
        seen.add(note.note_id)
        data = _image_bytes_from_base64(note.image_base64, limits, where) if note.image_base64 else None
        out.append(await _incoming(note, data, limits, where))
    return out
