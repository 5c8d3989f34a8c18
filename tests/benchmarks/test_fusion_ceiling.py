"""benchmarks/fusion_ceiling.py: mixing a text model's scores with an image signal, weights
chosen leave-one-replicate-out, pooled against the text model alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fusion_ceiling as fc  # noqa: E402  (the script, from benchmarks/)

from core.bootstrap import Bootstrap  # noqa: E402


def test_standardised_rows_and_the_mix() -> None:
    rng = np.random.default_rng(0)
    q, p = rng.normal(size=(5, 8)), rng.normal(size=(30, 8))
    z = fc.standardised(q, p)
    assert np.allclose(z.mean(axis=1), 0, atol=1e-9) and np.allclose(z.std(axis=1), 1, atol=1e-9)
    # Standardising a row keeps its order, so w = 0 ranks exactly as the text model does.
    assert (np.argsort(-z, axis=1) == np.argsort(-(q @ p.T), axis=1)).all()
    other = fc.standardised(rng.normal(size=(5, 8)), p)
    assert np.array_equal(fc.mixed(z, other, 0.0), z) and np.array_equal(fc.mixed(z, other, 1.0), other)
    assert np.allclose(fc.mixed(z, other, 0.25), 0.75 * z + 0.25 * other)
    # A constant row (an all-blank pool) stays finite.
    assert np.isfinite(fc.standardised(np.ones((2, 3)), np.ones((4, 3)))).all()


def simulated_record(seed: int, gain: dict[str, float], best_w: float, n: int = 400) -> dict:
    """A replicate's curves: the text model hits when u < 0.2; a signal adds `gain[signal]`
    of hits at `best_w`, falling off linearly away from it (zero at distance 0.5)."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    relation = rng.choice(["text", "image", "both"], n)
    curves = {}
    for signal in fc.SIGNALS:
        curves[signal] = {}
        for w in fc.WEIGHTS:
            rate = 0.2 + gain.get(signal, 0.0) * max(0.0, 1 - abs(w - best_w) / 0.5)
            hits = (u < rate).astype(float).tolist()
            curves[signal][str(w)] = {"recall@10": hits, "recall@100": hits}
    ids = [f"q{i}" for i in range(n)]
    return {
        "key": {"queries": ids},
        "replicate": f"s{seed}",
        "slices": {f"relation={r}": (relation == r).tolist() for r in ("text", "image", "both")},
        "trained": {"notellm2": {m: (u < 0.21).astype(float).tolist() for m in fc.METRICS}},
        "trained_query_ids": ids,
        "curves": curves,
    }


def test_weights_are_chosen_on_the_other_replicates() -> None:
    records = [simulated_record(s, {"frozen encoder": 0.0, "colour histogram": 0.06}, 0.3) for s in range(3)]
    # The colour signal peaks at 0.3 in every replicate, so each left-out choice finds it.
    assert fc.chosen_weights(records, "colour histogram") == [0.3, 0.3, 0.3]
    # A replicate whose own peak differs does not pull its own weight toward it.
    odd = simulated_record(9, {"frozen encoder": 0.0, "colour histogram": 0.06}, 0.8)
    assert fc.chosen_weights([*records, odd], "colour histogram")[-1] == 0.3
    # No gain anywhere: ties go to the smallest weight, the text model alone.
    assert fc.chosen_weights(records, "frozen encoder") == [0.0, 0.0, 0.0]


def test_pooled_gain_covers_the_simulated_one() -> None:
    records = [simulated_record(s, {"frozen encoder": 0.0, "colour histogram": 0.06}, 0.3) for s in range(3)]
    pooled = fc.pool(records, Bootstrap(resamples=400, seed=1))
    rows = pooled["rows"]
    colour = rows["text model + colour histogram"]["all"]["minus_text"]["recall@10"]
    assert colour["low"] > 0 and colour["low"] <= 0.06 <= colour["high"] + 0.02
    frozen = rows["text model + frozen encoder"]["all"]["minus_text"]["recall@10"]
    assert frozen["estimate"] == 0.0  # w = 0 chosen: the same rankings
    trained = rows["trained notellm2"]["all"]["minus_text"]["recall@10"]
    assert trained["low"] <= 0.01 <= trained["high"]
    assert set(rows["text model + colour histogram"]) >= {"all", *fc.SLICES}
    assert pooled["weights_chosen"] == "leave one replicate out" and pooled["queries"] == 1200
    md = fc.markdown(pooled)
    assert "**+0.0" in md and "text model + colour histogram" in md


def test_a_trained_variant_on_other_queries_is_left_out() -> None:
    record = simulated_record(0, {"frozen encoder": 0.0, "colour histogram": 0.0}, 0.5)
    record["trained_query_ids"] = list(reversed(record["trained_query_ids"]))
    pooled = fc.pool([record], Bootstrap(resamples=50))
    assert "trained notellm2" not in pooled["rows"] and pooled["weights_chosen"].startswith("in sample")


def test_plot_is_a_png(tmp_path: Path) -> None:
    records = [simulated_record(s, {"frozen encoder": 0.01, "colour histogram": 0.05}, 0.4) for s in range(2)]
    fc.plot(fc.pool(records, Bootstrap(resamples=50)), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("missing", ["results.json", "runs"])
def test_a_replicate_without_a_finished_run_exits_2(tmp_path: Path, missing: str) -> None:
    rep = tmp_path / "rep"
    (rep / "runs" / "text-only").mkdir(parents=True)
    (rep / "results.json").write_text("{}")
    target = rep / missing
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
    else:
        target.unlink()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fusion_ceiling.py"),
            str(rep),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "needs results.json and runs/text-only/" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_stem_colour_features_group_images_by_colour(tmp_path: Path) -> None:
    from PIL import Image

    colours = {"r1": (220, 30, 30), "r2": (200, 40, 20), "b1": (30, 40, 210), "g1": (40, 190, 60)}
    notes = []
    for name, rgb in colours.items():
        image = Image.new("RGB", (109, 109), (255, 255, 255))
        image.paste(rgb, (20, 20, 89, 89))  # a coloured square on white, like an emoji
        image.save(tmp_path / f"{name}.png")
        notes.append({"note_id": name, "title": "", "content": "", "tags": [], "image": f"{name}.png"})
    q, p = fc.stem_colour_features(notes[:1], notes[1:], tmp_path)
    assert q.shape == (1, 64) and p.shape == (3, 64)
    assert np.allclose(np.linalg.norm(np.concatenate([q, p]), axis=1), 1.0, atol=1e-5)
    # The red query's nearest note is the other red one, not blue or green.
    assert int(np.argmax(p @ q[0])) == 0


def test_cache_key_survives_its_json_round_trip(tmp_path: Path) -> None:
    """The cache is reused only if the key read back from JSON equals a fresh one."""
    import json

    key = fc.cache_key(tmp_path / "run", ["q1", "q2"])
    assert json.loads(json.dumps(key)) == key and key["signals"] == list(fc.SIGNALS)
