from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from retriever.gallery import GalleryRow, RelatedHit, render_gallery


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.stack: list[str] = []
        self.balanced = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs)["src"] or "")
        elif tag not in ("meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False


def _note(i: int, image: str | None) -> dict:
    return {"note_id": f"n{i}", "title": f"<title {i}>", "content": "c & d", "tags": [], "image": image}


def test_gallery_is_valid_html_with_existing_relative_images(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(root / "images" / f"n{i}.png")
    rows = [
        GalleryRow(
            _note(0, "images/n0.png"),
            [
                RelatedHit(_note(1, "images/n1.png"), 0.9, True, "image"),
                RelatedHit(_note(2, None), 0.5, False),
            ],
        )
    ]
    out = render_gallery(rows, tmp_path / "site" / "gallery.html", root, "Demo")
    text = out.read_text()
    parser = _Collect()
    parser.feed(text)
    assert parser.balanced and not parser.stack
    assert len(parser.srcs) == 2  # the note without an image shows none
    for src in parser.srcs:
        assert not Path(src).is_absolute()
        assert (out.parent / src).exists()
    assert "&lt;title 1&gt;" in text  # user text is escaped
    assert "shares motif" in text
    assert "1 of 2 related notes are true co-viewed pairs" in text
