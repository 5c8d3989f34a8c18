"""benchmarks/vision_encode.py: i2i's folded EfficientNet forward against the package's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import vision_encode  # noqa: E402  (the script, from benchmarks/)

from train.testing import single_thread  # noqa: E402


@pytest.mark.parametrize("vision", ["efficientnet-lite0", "efficientnet-lite0+stem"])
def test_both_forwards_give_the_same_features(vision: str, tmp_path: Path) -> None:
    with single_thread():
        result = vision_encode.main(
            [
                "--vision",
                vision,
                "--count",
                "4",
                "--batch-size",
                "2",
                "--repeats",
                "1",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
    assert result["max_relative_difference"] < 1e-4
    assert set(result["images_per_s"]) == {"i2i", "package"} and result["speedup"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 4
