"""benchmarks/relation_tradeoff.py: one embedding's mix of a text and an image signal, per
relation slice, at every weight."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import relation_tradeoff as rt  # noqa: E402  (the script, from benchmarks/)

from core.bootstrap import Bootstrap  # noqa: E402
from retriever.evaluate import EvalSet  # noqa: E402


def two_relation_set() -> tuple[EvalSet, np.ndarray, np.ndarray]:
    """A pool of 50 notes, 2 in each (topic, motif) cell of a 5 x 5 grid, so each topic and
    each motif holds 10; 16 queries, 8 related to their target by topic only and 8 by motif
    only. Returns the set and the two perfect signals (1 for the query's topic or motif)."""
    pool_topic = np.repeat(np.arange(5), 10)
    pool_motif = np.tile(np.repeat(np.arange(5), 2), 5)
    rng = np.random.default_rng(0)
    target_index, relation, q_topic, q_motif = [], [], [], []
    for i in range(16):
        t, m = i % 5, (i // 5) % 5
        if i < 8:  # same topic, another motif
            candidates = np.flatnonzero((pool_topic == t) & (pool_motif != m))
            relation.append("text")
        else:  # same motif, another topic
            candidates = np.flatnonzero((pool_motif == m) & (pool_topic != t))
            relation.append("image")
        target_index.append(int(candidates[rng.integers(len(candidates))]))
        q_topic.append(t)
        q_motif.append(m)
    text = (np.array(q_topic)[:, None] == pool_topic[None, :]).astype(float)
    image = (np.array(q_motif)[:, None] == pool_motif[None, :]).astype(float)
    rel = np.array(relation)
    es = EvalSet(
        split="test",
        queries=[{"note_id": f"q{i}"} for i in range(16)],
        targets=[f"p{t}" for t in target_index],
        pool=[{"note_id": f"p{i}"} for i in range(50)],
        target_index=np.array(target_index),
        slices={"relation=text": rel == "text", "relation=image": rel == "image"},
        short_chars=0,
    )
    return es, text, image


def test_standardised_keeps_each_rows_order() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(4, 30)) * 5 + 3
    z = rt.standardised_rows(scores)
    assert np.allclose(z.mean(axis=1), 0, atol=1e-9) and np.allclose(z.std(axis=1), 1, atol=1e-9)
    assert (np.argsort(-z, axis=1) == np.argsort(-scores, axis=1)).all()
    assert np.isfinite(rt.standardised_rows(np.ones((2, 5)))).all()  # a constant row stays finite


def test_topic_scores_mark_the_queries_topic() -> None:
    es, _, _ = two_relation_set()
    truth = pl.DataFrame(
        {"note_id": ["q0", "p0", "p1", "p2"], "topic": [7, 7, 8, 7]},
    )
    es.queries, es.pool = es.queries[:1], es.pool[:4]
    got = rt.topic_scores(es, truth)
    # p3 has no truth: it never counts as the query's topic.
    assert got.tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_each_weight_trades_one_relation_for_the_other() -> None:
    es, text, image = two_relation_set()
    curve = rt.mixed_curve(rt.standardised_rows(text), rt.standardised_rows(image), es, "perfect")
    text_mask, image_mask = es.slices["relation=text"], es.slices["relation=image"]
    # The text signal alone ties the query's 10 topic notes first: every text target is in
    # the top 10. The image signal alone does the same for the motif.
    assert curve[0.0][text_mask].mean() == 1.0 and curve[1.0][image_mask].mean() == 1.0
    # Alone, each signal ranks the other relation's target among the 40 tied below its 10.
    assert curve[0.0][image_mask].mean() == 0.0 and curve[1.0][text_mask].mean() == 0.0
    # At w = 0.5 the query's cell (2 notes) ranks first, then its topic's 8 other notes and
    # its motif's 8 tie: 8 places left for 16 tied notes, half a chance for every target.
    assert np.allclose(curve[0.5], 0.5)
    # Just below 0.5 the topic wins the tie: text pairs all found, image pairs none.
    assert curve[0.45][text_mask].mean() == 1.0 and curve[0.45][image_mask].mean() == 0.0


def test_summarise_picks_the_best_weight_and_keeps_its_intervals() -> None:
    es, text, image = two_relation_set()
    curve = rt.mixed_curve(rt.standardised_rows(text), rt.standardised_rows(image), es, "perfect")
    s = rt.summarise(curve, es, Bootstrap(resamples=200, seed=0), "w")
    # Every weight scores 0.5 overall (one relation's pairs found, or half of both): the
    # smallest weight wins the tie.
    assert s["best"] == 0.0 and s["alone"]["relation=text"] == 1.0
    at = s["at_best"]
    assert at["all"]["estimate"] == 0.5 and at["all"]["low"] <= 0.5 <= at["all"]["high"]
    assert at["relation=text"]["estimate"] == 1.0 and at["relation=image"]["estimate"] == 0.0
    assert set(s["curve"]) == {f"{w:g}" for w in rt.WEIGHTS}


def test_markdown_marks_text_pairs_above_chance_and_the_plot_is_a_png(tmp_path: Path) -> None:
    es, text, image = two_relation_set()
    boot = Bootstrap(resamples=100, seed=0)
    signals = {
        "perfect": rt.summarise(
            rt.mixed_curve(rt.standardised_rows(text), rt.standardised_rows(image), es, "p"), es, boot, "w"
        ),
        "none": rt.summarise(
            rt.mixed_curve(np.zeros_like(text), rt.standardised_rows(image), es, "n"), es, boot, "w"
        ),
    }
    record = {
        "replicate": "r",
        "queries": 16,
        "pool": 50,
        "slice_sizes": {"relation=text": 8, "relation=image": 8},
        "chance": 10 / 50,
        "signals": signals,
    }
    md = rt.markdown(record)
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert rows["perfect"].rstrip(" |").endswith("yes")
    assert rows["none"].rstrip(" |").endswith("no")  # no text signal: text pairs at chance
    rt.plot(record, tmp_path / "tradeoff.png")
    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """The script in a real process, as a user runs it."""
    script = str(ROOT / "benchmarks" / "relation_tradeoff.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT)


def test_a_bad_run_argument_exits_2_without_a_traceback(tmp_path: Path) -> None:
    proc = run_script(str(tmp_path), "--run", "nopath")
    assert proc.returncode == 2, proc.stderr
    assert "expected NAME=PATH" in proc.stderr and "Traceback" not in proc.stderr


def test_a_directory_that_is_not_a_quality_run_exits_2(tmp_path: Path) -> None:
    proc = run_script(str(tmp_path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert "is not a quality run" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_missing_run_exits_2_before_any_work(tmp_path: Path) -> None:
    # A name with '=' splits at the first one, so the path is "run=4=.../nope".
    proc = run_script(str(tmp_path), "--run", f"final=run=4={tmp_path / 'nope'}")
    assert proc.returncode == 2, proc.stderr
    assert "not found; pass a notellm2 run" in proc.stderr and "Traceback" not in proc.stderr
