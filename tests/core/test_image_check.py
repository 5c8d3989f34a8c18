"""`core.image_check`: a sample of the notes' images is tried up front."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.errors import UserError
from core.image_check import check_images, require_images


def notes_with_images(root: Path, n: int) -> list[dict]:
    (root / "images").mkdir(parents=True)
    notes = []
    for i in range(n):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(root / "images" / f"n{i}.png")
        notes.append({"note_id": f"n{i}", "image": f"images/n{i}.png"})
    return [*notes, {"note_id": "no-image", "image": None}]


def test_the_right_root_passes_and_the_wrong_one_stops_with_the_root_and_a_path(tmp_path: Path) -> None:
    notes = notes_with_images(tmp_path / "platform", 30)
    good = check_images(notes, tmp_path / "platform")
    assert (good.notes, good.with_image, good.sampled, good.loaded, good.bad) == (31, 30, 30, 30, 0)
    assert "30 of 30 sampled load" in good.describe() and str(tmp_path / "platform") in good.describe()
    require_images(good)

    wrong = check_images(notes, tmp_path)  # image paths are relative to platform/, not its parent
    assert (wrong.loaded, wrong.missing) == (0, 30)
    assert f"{tmp_path / 'images'}" in wrong.describe()  # the paths tried are shown
    with pytest.raises(UserError) as err:
        require_images(wrong)
    message = str(err.value)
    assert f"30 of 30 sampled images (100%) do not load from image root {tmp_path}" in message
    assert "(missing)" in message and "--max-bad-images" in message
    require_images(wrong, max_bad_share=1.0)  # allowed on purpose


def test_the_threshold_and_the_sample(tmp_path: Path) -> None:
    notes = notes_with_images(tmp_path, 40)
    (tmp_path / "images" / "n0.png").write_bytes(b"not a png")
    (tmp_path / "images" / "n1.png").unlink()
    check = check_images(notes, tmp_path)
    assert (check.missing, check.unreadable, check.bad_share) == (1, 1, 2 / 40)
    require_images(check, 0.05)
    with pytest.raises(UserError, match=r"more than --max-bad-images 0\.04"):
        require_images(check, 0.04)
    sampled = check_images(notes, tmp_path, sample=10)
    assert sampled.sampled == 10 and sampled.with_image == 40
    assert check_images([{"note_id": "a", "image": None}], tmp_path).sampled == 0
