"""benchmarks/quality_replicates.py: pooling quality runs (their results.json) over replicates."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality_replicates as qr  # noqa: E402  (the script, from benchmarks/)

from core.bootstrap import Bootstrap  # noqa: E402
from core.errors import UserError  # noqa: E402


def write_replicate(path: Path, seed: int, rates: dict[str, float], n: int = 300) -> dict[str, np.ndarray]:
    """A quality run's results.json with per-query values: query difficulty u is shared,
    a method hits when u < its rate (as `quality.py` writes them, via `per_query_record`)."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    relation = rng.choice(["text", "image", "both", "none"], n)
    hits = {m: (u < r).astype(float) for m, r in rates.items()}
    path.mkdir(parents=True)
    (path / "results.json").write_text(
        json.dumps(
            {
                "data": "emoji",
                "queries": n,
                "pool": n + 50,
                "args": {"seed": str(seed)},
                "per_query": {
                    "query_ids": [f"q{i}" for i in range(n)],
                    "slices": {
                        f"relation={r}": (relation == r).tolist() for r in ("text", "image", "both", "none")
                    },
                    "methods": {
                        m: {"recall@10": h.tolist(), "recall@100": h.tolist(), "mrr": (h / 2).tolist()}
                        for m, h in hits.items()
                    },
                },
            }
        )
    )
    return hits


def test_pool_three_replicates(tmp_path: Path) -> None:
    rates = {"bm25": 0.30, "text-only": 0.36, "notellm2": 0.40}
    dirs = [tmp_path / f"s{s}" for s in range(3)]
    hits = [
        write_replicate(d, s, {**rates, **({"micl": 0.38} if s == 0 else {})}) for s, d in enumerate(dirs)
    ]
    results = qr.pool([qr.load_replicate(d) for d in dirs], "notellm2", Bootstrap(resamples=300, seed=1))
    assert results["queries"] == 900 and results["left_out"] == ["micl"]  # micl is only in one replicate
    assert list(results["methods"]) == ["bm25", "text-only", "notellm2"]
    # The pooled estimate is the mean of the replicates' means; per-replicate values are kept.
    means = [h["notellm2"].mean() for h in hits]
    m = results["methods"]["notellm2"]
    assert m["metrics"]["recall@10"]["estimate"] == pytest.approx(np.mean(means))
    assert m["per_replicate_recall@10"] == pytest.approx(means)
    # notellm2 hits on a superset of text-only's queries: every replicate ahead, interval above 0.
    d = results["differences"]["text-only"]
    assert d["ahead"] == 3 and d["metrics"]["recall@10"]["low"] > 0
    assert d["metrics"]["recall@10"]["estimate"] == pytest.approx(
        np.mean([(h["notellm2"] - h["text-only"]).mean() for h in hits])
    )
    t = d["across_replicates_recall@10"]
    assert t["low"] <= d["metrics"]["recall@10"]["estimate"] <= t["high"]
    assert set(d["slices"]) == {"relation=text", "relation=image", "relation=both"}
    md = qr.markdown(results)
    assert "| text-only |" in md and "3/3" in md and "**+0.0" in md and "micl" in md


def test_ablation_pairs(tmp_path: Path) -> None:
    rates = {"basic": 0.30, "micl": 0.34, "late-fusion": 0.31, "notellm2": 0.36}
    dirs = [tmp_path / f"s{s}" for s in range(2)]
    hits = [write_replicate(d, s, rates) for s, d in enumerate(dirs)]
    replicates = [qr.load_replicate(d) for d in dirs]
    boot = Bootstrap(resamples=200, seed=3)
    # By default: the paper's four ablations, each method A minus method B, paired.
    results = qr.pool(replicates, "notellm2", boot)
    assert list(results["ablations"]) == [f"{a} − {b}" for a, b in qr.ABLATIONS]
    d = results["ablations"]["micl − basic"]
    assert d["per_replicate_recall@10"] == pytest.approx([(h["micl"] - h["basic"]).mean() for h in hits])
    assert d["ahead"] == 2 and d["metrics"]["recall@10"]["low"] > 0  # micl hits a superset of basic's
    assert "## What each mechanism adds" in qr.markdown(results) and "| micl − basic |" in qr.markdown(
        results
    )
    # Explicit pairs replace the default; one naming an unpooled method is an error, not a silent skip.
    results = qr.pool(replicates, "notellm2", boot, [("late-fusion", "micl")])
    assert list(results["ablations"]) == ["late-fusion − micl"]
    assert results["ablations"]["late-fusion − micl"]["metrics"]["recall@10"]["high"] < 0
    with pytest.raises(UserError, match="--pair names text-only"):
        qr.pool(replicates, "notellm2", boot, [("text-only", "basic")])
    # Without the ablation variants the default pairs are left out, and so is the section.
    for s in range(2):
        write_replicate(tmp_path / f"o{s}", s, {"basic": 0.3, "notellm2": 0.35})
    plain = qr.pool([qr.load_replicate(tmp_path / f"o{s}") for s in range(2)], "notellm2", boot)
    assert plain["ablations"] == {} and "What each mechanism adds" not in qr.markdown(plain)
    assert qr.parse_pair("late-fusion:basic") == ("late-fusion", "basic")
    for bad in ("micl", "micl:", "micl:micl"):
        with pytest.raises(argparse.ArgumentTypeError):
            qr.parse_pair(bad)


def test_text_length_slices(tmp_path: Path) -> None:
    """The paper's short/long query-text slice: a gain only on short text shows there."""
    dirs = [tmp_path / f"s{s}" for s in range(3)]
    hits = [write_replicate(d, s, {"text-only": 0.30, "notellm2": 0.30}) for s, d in enumerate(dirs)]
    for d, h in zip(dirs, hits, strict=True):
        results = json.loads((d / "results.json").read_text())
        n = len(h["notellm2"])
        short = np.arange(n) % 2 == 0
        gained = h["notellm2"].copy()
        gained[short & (np.arange(n) % 4 == 0)] = 1.0  # a hit on a quarter of the queries, all short
        per_query = results["per_query"]
        per_query["slices"] |= {"query_text=short": short.tolist(), "query_text=long": (~short).tolist()}
        per_query["methods"]["notellm2"] = {
            "recall@10": gained.tolist(),
            "recall@100": gained.tolist(),
            "mrr": (gained / 2).tolist(),
        }
        (d / "results.json").write_text(json.dumps(results))
    results = qr.pool([qr.load_replicate(d) for d in dirs], "notellm2", Bootstrap(resamples=300, seed=2))
    d = results["differences"]["text-only"]
    assert d["text_length_queries"] == {"query_text=short": 450, "query_text=long": 450}
    assert d["text_length"]["query_text=short"]["recall@10"]["low"] > 0
    long = d["text_length"]["query_text=long"]["recall@10"]
    assert long["estimate"] == pytest.approx(0.0) and not qr.excludes_zero(long)
    md = qr.markdown(results)
    assert "## By the query's text length" in md and "R@10 short (450 q)" in md
    # Runs without the slices (older results) leave the section out.
    for s in range(2):
        write_replicate(tmp_path / f"o{s}", s, {"basic": 0.3, "notellm2": 0.35})
    plain = qr.pool(
        [qr.load_replicate(tmp_path / f"o{s}") for s in range(2)], "notellm2", Bootstrap(resamples=50)
    )
    assert plain["differences"]["basic"]["text_length"] == {}
    assert "text length" not in qr.markdown(plain)


def test_replicates_must_be_independent_draws(tmp_path: Path) -> None:
    write_replicate(tmp_path / "a", 0, {"notellm2": 0.4, "basic": 0.35})
    write_replicate(tmp_path / "b", 0, {"notellm2": 0.4, "basic": 0.35})
    with pytest.raises(UserError, match="share --seed 0"):
        qr.pool([qr.load_replicate(tmp_path / d) for d in "ab"], "notellm2", Bootstrap(resamples=50))
    with pytest.raises(UserError, match="at least 2"):
        qr.pool([qr.load_replicate(tmp_path / "a")], "notellm2", Bootstrap(resamples=50))
    write_replicate(tmp_path / "c", 1, {"notellm2": 0.4, "basic": 0.35})
    with pytest.raises(UserError, match="--reference 'micl'"):
        qr.pool([qr.load_replicate(tmp_path / d) for d in "ac"], "micl", Bootstrap(resamples=50))
    for d in "ac":  # two seeds, but one split: quality.py --pairs given the same pairs
        results = json.loads((tmp_path / d / "results.json").read_text())
        results["source"] = {"label": "shop", "data": "/p", "images": "/p", "pairs": "/p/pairs"}
        (tmp_path / d / "results.json").write_text(json.dumps(results))
    with pytest.raises(UserError, match="share the pairs in /p/pairs"):
        qr.pool([qr.load_replicate(tmp_path / d) for d in "ac"], "notellm2", Bootstrap(resamples=50))
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps({"data": "emoji", "queries": 3}))
    with pytest.raises(UserError, match="no per-query values"):
        qr.load_replicate(old)


def test_cli_writes_its_tables_and_exits_2_on_a_missing_run(tmp_path: Path) -> None:
    for s in range(2):
        write_replicate(tmp_path / f"s{s}", s, {"basic": 0.3, "notellm2": 0.35}, n=120)
    script = str(ROOT / "benchmarks" / "quality_replicates.py")
    args = [sys.executable, script, str(tmp_path / "s0"), str(tmp_path / "s1"), "--resamples", "100"]
    done = subprocess.run(
        [*args, "--out", str(tmp_path / "pooled")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "pooled" / "results.json").read_text())["queries"] == 240
    assert "basic" in (tmp_path / "pooled" / "results.md").read_text()
    assert (tmp_path / "pooled" / "differences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(
        [*args[:2], str(tmp_path / "nope"), str(tmp_path / "s1")], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "nope" in bad.stdout + bad.stderr
    bad_pair = subprocess.run([*args, "--pair", "notellm2"], capture_output=True, text=True, cwd=ROOT)
    assert bad_pair.returncode == 2 and "Traceback" not in bad_pair.stderr and "A:B" in bad_pair.stderr
