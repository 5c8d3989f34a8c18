"""`i2i index`, `i2i related`, `i2i eval` end to end with tiny real checkpoints (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from core.errors import UserError
from i2i.cli import app


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two training run directories with tiny random checkpoints: a/best and b/last."""
    from train.checkpoint import save_checkpoint
    from train.model import build_model
    from train.testing import tiny_model_config

    root = tmp_path_factory.mktemp("runs")
    for name, sub, seed in (("a", "best", 0), ("b", "last", 1)):
        torch.manual_seed(seed)
        save_checkpoint(build_model(tiny_model_config()), root / name / sub)
    return root / "a", root / "b"


def _invoke(*args: object) -> tuple[int, str]:
    """Run the real app; a `UserError` counts as `main()` reports it: exit 2 and its message.

    (i2i.cli wraps some commands so CliRunner already sees exit 2; this holds either way.)
    """
    result = CliRunner().invoke(app, [str(a) for a in args])
    if isinstance(result.exception, UserError):
        return 2, result.output + str(result.exception)
    return result.exit_code, result.output


def test_index_related_end_to_end(runs: tuple[Path, Path], synth_platform: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.parquet"
    pl.read_parquet(synth_platform / "notes.parquet").head(24).write_parquet(notes)
    ws = tmp_path / "ws"
    common = ("--workspace", ws, "--image-root", synth_platform)

    code, out = _invoke("index", notes, "--checkpoint", runs[0], *common, "--batch-size", "8")
    assert code == 0, out
    assert "24 / 0 / 0" in out and "points in collection" in out

    code, out = _invoke("index", notes, "--checkpoint", runs[0], *common)
    assert code == 0, out
    assert "0 / 0 / 24" in out  # idempotent: nothing new, nothing embedded

    code, out = _invoke("index", notes, "--checkpoint", runs[1], *common)
    assert code == 2 and "refusing to mix" in out and "--recreate" in out

    code, out = _invoke("related", "n000003", "-k", "5", "--json", "--workspace", ws)
    assert code == 0, out
    answer = json.loads(out)
    ids = [r["note_id"] for r in answer["related"]]
    assert len(ids) == 5 and "n000003" not in ids
    assert [r["rank"] for r in answer["related"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in answer["related"]]
    assert scores == sorted(scores, reverse=True)

    code, out = _invoke("related", "n000003", "--workspace", ws)
    assert code == 0 and "related to n000003" in out

    code, out = _invoke("related", "no-such-note", "--workspace", ws)
    assert code == 2 and "no-such-note" in out and "not in" in out

    code, out = _invoke("related", "n000003", "--workspace", ws, "--collection", "other")
    assert code == 2 and "i2i index" in out

    code, out = _invoke("index", notes, "--checkpoint", runs[1], *common, "--recreate")
    assert code == 0 and "recreated" in out


def test_eval_writes_reports_and_compares(
    runs: tuple[Path, Path], synth_platform: Path, synth_pairs: Path
) -> None:
    data = ("--notes", synth_platform / "notes.parquet", "--pairs", synth_pairs)
    code, out = _invoke("eval", runs[0], *data)
    assert code == 0, out
    report = json.loads((runs[0] / "report.json").read_text())
    assert set(report["methods"]) == {"a", "bm25", "image-only"}
    assert "relation=image" in report["methods"]["a"]["slices"]
    assert report["methods"]["a"]["ann"]["recall@10_vs_exact"] == pytest.approx(1.0)  # small pool: full scan
    assert (runs[0] / "report.md").exists() and (runs[0] / "recall_at_k.png").exists()
    # 95% intervals for every method and metric; the run minus each baseline, paired.
    for m in report["methods"].values():
        assert "per_query" not in m
        for key, value in m["metrics"].items():
            if key not in ("queries", "pool"):
                iv = m["intervals"][key]
                assert iv["low"] <= value <= iv["high"] and value == pytest.approx(iv["estimate"])
    diffs = report["differences"]
    assert diffs["reference"] == "a" and set(diffs["methods"]) == {"bm25", "image-only"}
    d = diffs["methods"]["bm25"]["metrics"]["mrr"]
    want = report["methods"]["a"]["metrics"]["mrr"] - report["methods"]["bm25"]["metrics"]["mrr"]
    assert d["estimate"] == pytest.approx(want) and d["low"] <= d["estimate"] <= d["high"]
    assert "a − method:" in out and "bootstrap interval over queries" in out
    assert "## a minus each method" in (runs[0] / "report.md").read_text()

    code, out = _invoke("eval", runs[0], runs[1], *data)
    assert code == 2 and "--compare" in out

    out_dir = runs[0].parent / "cmp"
    code, out = _invoke("eval", "--compare", runs[0], runs[1], *data, "--no-baselines", "--out", out_dir)
    assert code == 0, out
    assert set(json.loads((out_dir / "report.json").read_text())["methods"]) == {"a", "b"}

    code, out = _invoke("eval", runs[0], "--pairs", synth_pairs)
    assert code == 2 and "--notes" in out


def test_blanked_embedder_sees_one_modality(runs: tuple[Path, Path]) -> None:
    import numpy as np

    from retriever.baselines import BlankedEmbedder
    from train.embed import load_embedder
    from train.testing import tiny_notes

    notes = tiny_notes(4)  # no images: blanking the image changes nothing, blanking text does
    full = load_embedder(runs[0])
    np.testing.assert_allclose(BlankedEmbedder(full, "image").embed(notes), full.embed(notes), atol=1e-5)
    no_text = BlankedEmbedder(full, "text").embed(notes)
    assert np.allclose(no_text, no_text[0], atol=1e-5)  # every note looks the same without text
    assert not np.allclose(no_text, full.embed(notes), atol=1e-3)


def test_eval_takes_data_paths_from_the_run(
    runs: tuple[Path, Path], synth_platform: Path, synth_pairs: Path
) -> None:
    run = runs[1]
    (run / "config.json").write_text(
        json.dumps({"notes": str(synth_platform / "notes.parquet"), "pairs": str(synth_pairs), "lr": 1e-4})
    )
    code, out = _invoke("eval", "--checkpoint", run, "--no-baselines", "--no-ann", "--split", "val")
    assert code == 0, out
    report = json.loads((run / "report.json").read_text())
    assert report["split"] == "val" and report["pairs_file"].endswith("val.parquet")
    assert set(report["methods"]) == {"b"} and "ann" not in report["methods"]["b"]


def test_eval_ignores_a_foreign_truth_file_and_takes_truth_explicitly(
    runs: tuple[Path, Path], synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pl.read_parquet(synth_platform / "notes.parquet").write_parquet(data / "notes.parquet")
    pl.DataFrame({"id": ["x"], "label": [1]}).write_parquet(data / "truth.parquet")  # someone else's
    args = ("eval", runs[0], "--notes", data / "notes.parquet", "--pairs", synth_pairs, "--no-ann")
    args += ("--image-root", synth_platform, "--no-baselines")  # the tiny model alone: fast
    code, out = _invoke(*args, "--out", tmp_path / "r1")
    assert code == 0, out
    # Whitespace-blind: rich puts a path longer than the line on a line of its own, so the
    # wrapping (and a space before the colon) depends on how long the tmp path is.
    note = f"ignoring {data / 'truth.parquet'}: it lacks note_id, topic, motif"
    assert "".join(note.split()) in "".join(out.split())
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert report["truth_file"] is None and "relation=image" not in report["methods"]["a"]["slices"]

    code, out = _invoke(*args, "--out", tmp_path / "r2", "--truth", data / "truth.parquet")
    assert code == 2 and "lacks column(s) note_id, topic, motif" in out

    code, out = _invoke(*args, "--out", tmp_path / "r3", "--truth", synth_platform / "truth.parquet")
    assert code == 0, out
    report = json.loads((tmp_path / "r3" / "report.json").read_text())
    assert "relation=image" in report["methods"]["a"]["slices"]


def test_eval_out_refuses_foreign_files_and_inputs(
    runs: tuple[Path, Path], synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    args = ("eval", runs[0], "--notes", synth_platform / "notes.parquet", "--pairs", synth_pairs)
    args += ("--no-ann", "--no-baselines")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.md").write_text("mine")
    code, out = _invoke(*args, "--out", mine)
    assert code == 2 and "thesis.md" in out and "--force" in out
    code, out = _invoke(*args, "--out", synth_pairs)
    assert code == 2 and "is the input" in out
    code, out = _invoke(*args, "--out", mine, "--force")
    assert code == 0, out
    assert sorted(p.name for p in mine.iterdir()) == [
        "recall_at_k.png",
        "report.json",
        "report.md",
        "thesis.md",
    ]


def test_eval_and_index_check_their_arguments_before_reading_data(
    runs: tuple[Path, Path], synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    data = ("--notes", synth_platform / "notes.parquet", "--pairs", synth_pairs, "--no-ann")
    out = tmp_path / "report"
    for args, message in [
        (("eval", runs[0], *data, "--out", out, "--split", "holdout"), "--split 'holdout' is not a split"),
        (("eval", tmp_path / "no-run", *data, "--out", out), "checkpoint not found"),
        (("eval", runs[0], *data, "--out", out, "--short-chars", "-1"), "--short-chars"),
        (("eval", runs[0], *data, "--out", out, "--device", "gpu"), "unknown device 'gpu'"),
    ]:
        code, text = _invoke(*args)
        assert code == 2 and message in text and "Traceback" not in text, (args, text)
        assert not out.exists()
    ws = tmp_path / "ws"
    notes = synth_platform / "notes.parquet"
    code, text = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws, "--device", "tpu")
    assert code == 2 and "expected cpu, cuda or cuda:N" in text and not ws.exists(), text
    # embed: a foreign --out is refused before the checkpoint (here a missing one) is looked at.
    code, text = _invoke("embed", notes, "--checkpoint", tmp_path / "no-run", "--out", synth_platform)
    assert code == 2 and "holds files that are not vector parts" in text, text


def test_index_and_eval_stop_when_images_do_not_resolve(
    runs: tuple[Path, Path], synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.parquet"  # image paths are relative to synth_platform, not tmp_path
    pl.read_parquet(synth_platform / "notes.parquet").head(24).write_parquet(notes)
    ws = tmp_path / "ws"
    code, out = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws)
    assert code == 2
    assert f"do not load from image root {tmp_path}" in " ".join(out.split())
    assert not (ws / "qdrant" / "notes").exists()  # stopped before any work
    code, out = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws, "--max-bad-images", "1")
    assert code == 0, out

    args = ("eval", runs[0], "--notes", notes, "--pairs", synth_pairs, "--no-ann", "--out", tmp_path / "r")
    code, out = _invoke(*args)
    assert code == 2 and "do not load from image root" in out
    code, out = _invoke(*args, "--image-root", synth_platform)
    assert code == 0, out
    assert "24 of 24 sampled load" in " ".join(out.split())


def test_embed_shards_then_index_and_eval_from_vectors(
    runs: tuple[Path, Path], synth_platform: Path, synth_pairs: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    notes = synth_platform / "notes.parquet"
    vectors = tmp_path / "vectors"
    embed = ("embed", notes, "--checkpoint", runs[0], "--out", vectors, "--part-size", "50")
    code, out = _invoke(*embed, "--shard", "0/2")
    assert code == 0, out
    proc = subprocess.run(
        [sys.executable, "-m", "i2i.cli", *map(str, embed)],
        env={**__import__("os").environ, "RANK": "1", "WORLD_SIZE": "2"},  # as torchrun sets them
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2" in proc.stdout
    code, out = _invoke(*embed, "--shard", "0/2")  # a re-run finds every part complete
    assert code == 0 and "embedded" in out and " 0 in " in out

    ws = tmp_path / "ws"
    code, out = _invoke("index", notes, "--vectors", vectors, "--workspace", ws)
    assert code == 0, out
    assert "120 / 0 / 0" in out
    code, out = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws)
    assert code == 0 and "0 / 0 / 120" in out  # the same vectors: nothing to embed again
    code, out = _invoke("index", notes, "--vectors", vectors, "--checkpoint", runs[0], "--workspace", ws)
    assert code == 2 and "exactly one of" in out

    data = ("--notes", notes, "--pairs", synth_pairs, "--no-baselines", "--no-ann")
    code, out = _invoke("eval", "--compare", runs[0], "--vectors", vectors, *data, "--out", tmp_path / "ev")
    assert code == 0, out
    methods = json.loads((tmp_path / "ev" / "report.json").read_text())["methods"]
    assert set(methods) == {"a", "vectors"}
    assert methods["vectors"]["model_id"] == methods["a"]["model_id"]
    assert methods["vectors"]["metrics"] == pytest.approx(methods["a"]["metrics"], abs=1e-9)


def test_embedding_precision_flag(runs: tuple[Path, Path], synth_platform: Path, tmp_path: Path) -> None:
    """`--precision` reaches the embedder of index/eval/embed: a bad value is a usage error
    (exit 2, naming the choices) before anything is written, in a real process too; bf16
    where this CPU would emulate it names the fix; fp32 indexes like auto does on CPU."""
    import subprocess
    import sys

    import torch

    notes = synth_platform / "notes.parquet"
    ws = tmp_path / "ws"
    code, out = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws, "--precision", "half")
    assert code == 2 and "unknown precision 'half'" in out and "auto, bf16, fp32" in out
    assert not ws.exists()
    vectors = tmp_path / "vectors"
    embed = ("embed", notes, "--checkpoint", runs[0], "--out", vectors, "--precision", "half")
    proc = subprocess.run(
        [sys.executable, "-m", "i2i.cli", *map(str, embed)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown precision 'half'" in proc.stderr and "Traceback" not in proc.stderr
    assert not vectors.exists()
    caps = torch.cpu.get_capabilities()
    code, out = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws, "--precision", "bf16")
    if caps.get("avx512_bf16") or caps.get("amx_bf16"):  # bf16 runs here: same model, same collection
        assert code == 0 and "120 / 0 / 0" in out, out
    else:
        assert code == 2 and "--precision fp32" in out and not ws.exists()
    code, out = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws, "--precision", "fp32")
    assert code == 0, out
    code, out = _invoke("index", notes, "--checkpoint", runs[0], "--workspace", ws)
    assert code == 0 and "0 / 0 / 120" in out  # the same model: nothing to embed again
