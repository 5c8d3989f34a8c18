"""benchmarks/attention_share.py: the pooled token's attention on the image, by layer band,
pooled over replicates and paired against a reference variant."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import attention_share as att  # noqa: E402  (the script, from benchmarks/)

from core.bootstrap import Bootstrap  # noqa: E402
from core.errors import UserError  # noqa: E402
from train.attention_share import PARTS  # noqa: E402

LAYERS = 6


def test_bands_and_the_note_sample() -> None:
    assert [len(v) for v in att.band_layers(30).values()] == [10, 10, 10]
    assert [v.tolist() for v in att.band_layers(7).values()] == [[0, 1, 2], [3, 4], [5, 6]]
    assert list(att.band_layers(2)) == ["shallow", "middle"]  # a tiny model has fewer bands
    queries = [{"note_id": f"n{i:03d}"} for i in (5, 3, 9, 1, 7)]
    assert att.sample_notes(queries, 10) == [3, 1, 0, 4, 2]  # all of them, by id
    picks = att.sample_notes(queries, 3)
    assert [queries[i]["note_id"] for i in picks] == ["n001", "n005", "n009"]  # spread over the ids


def simulated(seed: int, extra_shallow: float, n: int = 200) -> dict:
    """A replicate: `basic` puts visual share u ~ U(0.05, 0.15) in every layer; `lf` the
    same plus `extra_shallow` in the shallow band (layers 0-1), taken from the text."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.05, 0.15, n)
    base = np.zeros((n, LAYERS, len(PARTS)))
    base[..., PARTS.index("first")] = 0.5
    base[..., PARTS.index("visual")] = u[:, None]
    base[..., PARTS.index("text")] = 0.5 - u[:, None]
    lifted = base.copy()
    lifted[:, :2, PARTS.index("visual")] += extra_shallow
    lifted[:, :2, PARTS.index("text")] -= extra_shallow
    counts = np.tile([1, 16, 0, 0, 63], (n, 1))  # 16 visual of 80 tokens: an even spread gives 0.2
    short = rng.random(n) < 0.5

    def run(shares: np.ndarray) -> dict:
        return {"note_ids": [f"q{i}" for i in range(n)], "shares": shares.tolist(), "counts": counts.tolist()}

    return {
        "slices": {"query_text=short": short.tolist(), "query_text=long": (~short).tolist()},
        "variants": {"basic": run(base), "lf": run(lifted)},
    }


def test_pooled_difference_covers_the_simulated_one() -> None:
    records = [simulated(0, 0.04), simulated(1, 0.04)]
    pooled = att.pool(records, ["basic", "lf"], "basic", Bootstrap(resamples=400, seed=1))
    lf = pooled["all"]["lf"]
    shallow = lf["visual_minus_reference"]["shallow"]
    assert shallow["low"] > 0 and shallow["low"] <= 0.04 <= shallow["high"]
    assert shallow["estimate"] == pytest.approx(0.04)
    deep = lf["visual_minus_reference"]["deep"]
    assert deep["estimate"] == pytest.approx(0.0, abs=1e-12) and deep["low"] <= 0 <= deep["high"]
    assert lf["visual"]["shallow"]["estimate"] == pytest.approx(
        pooled["all"]["basic"]["visual"]["shallow"]["estimate"] + 0.04
    )
    assert "visual_minus_reference" not in pooled["all"]["basic"]
    # No summary token or <IMG_EMB> here: the whole image's share is the visual tokens'.
    assert lf["image_minus_reference"]["shallow"]["estimate"] == pytest.approx(0.04)
    assert lf["per_layer"]["image"] == lf["per_layer"]["visual"]
    assert lf["uniform_visual"] == pytest.approx(0.2)
    assert lf["per_layer"]["visual"][0] - lf["per_layer"]["visual"][5] == pytest.approx(0.04, abs=1e-9)
    short = sum(sum(r["slices"]["query_text=short"]) for r in records)
    assert pooled["query_text=short"]["notes"] == short and pooled["all"]["notes"] == 400
    lines = att.markdown(
        {
            "replicates": ["s0", "s1"],
            "layers": LAYERS,
            "bands": {"shallow": [1, 2], "middle": [3, 4], "deep": [5, 6]},
            "pooled": pooled,
        },
        ["basic", "lf"],
        "basic",
    )
    assert any(line.startswith("| lf |") and "**+4.00 pp [" in line for line in lines)
    assert any(line.startswith("| basic |") and line.endswith("| 20.0% |") for line in lines)


def test_measure_reads_a_checkpoint_and_refuses_a_text_only_one(tmp_path: Path) -> None:
    from PIL import Image

    from train.checkpoint import load_checkpoint, save_checkpoint
    from train.model import build_model
    from train.testing import single_thread, tiny_model_config, tiny_notes

    notes = tiny_notes(3)
    for i, note in enumerate(notes):
        Image.new("RGB", (32, 32), (40 * i, 100, 200)).save(tmp_path / f"{i}.png")
        note["image"] = f"{i}.png"
    with single_thread():
        model = build_model(tiny_model_config(variant="late-fusion"))
        save_checkpoint(model, tmp_path / "lf")
        result = att.measure(load_checkpoint(tmp_path / "lf"), notes, tmp_path, batch_size=2)
        shares = np.asarray(result["shares"])
        assert shares.shape == (3, 2, len(PARTS)) and result["note_ids"] == ["n0", "n1", "n2"]
        np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(att.measure(model, notes, tmp_path, 3)["shares"], shares, atol=1e-5)
        with pytest.raises(UserError, match="text-only model has no visual tokens"):
            att.measure(build_model(tiny_model_config(variant="text-only")), notes, tmp_path, batch_size=2)


def test_the_untrained_model_is_the_runs_step_zero(
    synth_platform: Path, synth_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`VARIANT@0` rebuilds what `i2i train` built before step 1: same config, same seed."""
    import torch

    import train.loop as loop
    from train.testing import single_thread, tiny_model_config
    from train.train_config import TrainConfig

    built: dict[str, torch.Tensor] = {}

    def build_and_keep(config):  # the model the run starts from, before any step
        model = real_build(config)
        built.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    real_build = loop.build_model
    monkeypatch.setattr(loop, "build_model", build_and_keep)
    cfg = TrainConfig(
        notes=str(synth_platform / "notes.parquet"),
        images=str(synth_platform),
        pairs=str(synth_pairs),
        out=str(tmp_path / "run"),
        model=tiny_model_config(),
        lr=1e-3,
        pairs_per_step=8,
        max_steps=1,
        val_every=1,
        num_workers=0,
        val_max_queries=8,
        seed=7,
    )
    with single_thread():
        loop.train(cfg)
        torch.manual_seed(123)  # the rebuild does not depend on the RNG state before it
        rebuilt = att.untrained_model(Path(cfg.out)).state_dict()
    assert built and set(rebuilt) == set(built)
    for name, value in rebuilt.items():
        assert torch.equal(value, built[name]), name
