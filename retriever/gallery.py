"""A related-notes gallery page: for sample queries, the query note beside its top-k.

The page is one self-contained HTML file whose images are referenced by paths relative
to the page (nothing is copied), so it opens from disk in any browser. Each related note
shows its rank, score, and whether (query, note) is a true co-viewed pair of the split.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from core.contracts import Note, resolve_image
from core.io import atomic_path


@dataclass
class RelatedHit:
    """One related note shown under a query."""

    note: Note
    score: float
    is_true_pair: bool
    relation: str | None = None  # synthetic data: which factor query and note share


@dataclass
class GalleryRow:
    """A query note and its related notes, best first."""

    query: Note
    hits: list[RelatedHit]


_SHARES = {"text": "topic", "image": "motif", "both": "topic + motif", "none": "nothing"}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}
h1{font-size:1.4rem} p.meta{color:#555}
section{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}
.row{display:flex;gap:.75rem;overflow-x:auto;align-items:flex-start}
figure{margin:0;width:150px;flex:none;font-size:.8rem}
figure img{width:150px;height:150px;object-fit:cover;border-radius:4px;background:#eee}
figure.query{border-right:2px solid #888;padding-right:.75rem;width:170px}
.true{outline:3px solid #2a9d3a}.false{outline:1px solid #ccc}
.badge{display:inline-block;padding:0 .3rem;border-radius:3px;color:#fff;font-size:.7rem}
.badge.true{background:#2a9d3a;outline:none}.badge.false{background:#999;outline:none}
.text{color:#555;max-height:4.5em;overflow:hidden}
"""


def _image_src(note: Note, image_root: Path | None, page_dir: Path) -> str | None:
    path = resolve_image(note.get("image"), image_root)
    if path is None:
        return None
    return Path(os.path.relpath(Path(path).resolve(), page_dir.resolve())).as_posix()


def _figure(note: Note, image_root: Path | None, page_dir: Path, caption: str, css: str) -> str:
    src = _image_src(note, image_root, page_dir)
    img = f'<img src="{html.escape(src)}" alt="{html.escape(note["note_id"])}">' if src else ""
    title = html.escape(note.get("title") or "(no title)")
    text = html.escape((note.get("content") or "")[:160])
    return (
        f'<figure class="{css}">{img}<figcaption>{caption}<br><b>{title}</b>'
        f'<div class="text">{text}</div></figcaption></figure>'
    )


def render_gallery(
    rows: list[GalleryRow], out: str | Path, image_root: str | Path | None, title: str, subtitle: str = ""
) -> Path:
    """Write the gallery page to `out` (atomically) and return its path."""
    out = Path(out)
    page_dir = out.parent
    root = Path(image_root) if image_root is not None else None
    sections = []
    for row in rows:
        q = row.query
        figs = [_figure(q, root, page_dir, f"query <code>{html.escape(q['note_id'])}</code>", "query")]
        for rank, hit in enumerate(row.hits, start=1):
            verdict = "co-viewed" if hit.is_true_pair else "not a pair"
            badge = f'<span class="badge {str(hit.is_true_pair).lower()}">{verdict}</span>'
            caption = f"#{rank} · {hit.score:.3f} {badge}<br><code>{html.escape(hit.note['note_id'])}</code>"
            if hit.relation:
                caption += f" · shares {html.escape(_SHARES.get(hit.relation, hit.relation))}"
            figs.append(_figure(hit.note, root, page_dir, caption, str(hit.is_true_pair).lower()))
        found = sum(h.is_true_pair for h in row.hits)
        sections.append(
            f"<section><h2>{html.escape(q.get('title') or q['note_id'])}</h2>"
            f'<p class="meta">{found} of {len(row.hits)} related notes are true co-viewed pairs</p>'
            f'<div class="row">{"".join(figs)}</div></section>'
        )
    page = (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="meta">{html.escape(subtitle)}</p>'
        f"{''.join(sections)}</body></html>\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
