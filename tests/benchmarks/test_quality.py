"""benchmarks/quality.py on a platform directory of the user's (`--data DIR`): mined,
trained, evaluated and tabulated without writing into DIR; and the errors a user can fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (the script, from benchmarks/)
import quality_data  # noqa: E402

from pipeline.synth import generate_platform  # noqa: E402


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's platform: notes, images and logs, and no truth.parquet (no labels)."""
    root = tmp_path_factory.mktemp("user") / "shop"
    generate_platform(root, notes=160, users=80, events=8000, image_size=32, seed=1)
    for extra in ("truth.parquet", "users.parquet", "synth.json"):
        (root / extra).unlink()
    return root


@pytest.mark.slow
def test_a_platform_directory_is_measured_without_writing_into_it(platform: Path, tmp_path: Path) -> None:
    before = snapshot(platform)
    out = tmp_path / "q"
    args = ["--data", str(platform), "--out", str(out), "--tiny", "--variants", "text-only,notellm2"]
    args += ["--steps", "2", "--resamples", "50", "--no-blank", "--window", "1h", "--threads", "1"]
    results = quality.main(args)

    assert snapshot(platform) == before  # nothing written into the user's directory
    assert json.loads((out / "source.json").read_text())["data"] == str(platform.resolve())
    assert (out / "pairs" / "test.parquet").exists() and (out / "runs" / "notellm2" / "summary.json").exists()
    assert results["data"] == "shop" and results["queries"] > 0
    # No truth.parquet: no relation slices; the text-length slices instead.
    assert not any(s.startswith("relation=") for s in results["slice_sizes"])
    assert (
        results["slice_sizes"]["query_text=short"] + results["slice_sizes"]["query_text=long"]
        == (results["queries"])
    )
    assert set(results["methods"]) == {"bm25", "image-only", "text-only", "notellm2"}
    md = (out / "results.md").read_text()
    assert "short-text R@10" in md and "text R@10 |" not in md.replace("-text R@10", "")
    # The scripts that read a finished run find the platform through OUT/source.json.
    es = quality_data.quality_eval_set(out)
    assert [q["note_id"] for q in es.queries] == results["per_query"]["query_ids"]
    assert quality_data.quality_source(out).images == platform.resolve()

    # Pairs mined already (--pairs): the same split and queries, nothing mined into OUT.
    mined = ["--data", str(platform), "--pairs", str(out / "pairs"), "--out", str(tmp_path / "q2")]
    small = ["--tiny", "--variants", "text-only", "--steps", "1", "--resamples", "20", "--no-blank"]
    again = quality.main([*mined, *small, "--threads", "1"])
    assert again["per_query"]["query_ids"] == results["per_query"]["query_ids"]
    assert not (tmp_path / "q2" / "pairs").exists()

    # A re-run assembles the table from the cached runs; another platform needs another OUT.
    assert quality.main(args)["methods"]["notellm2"]["metrics"] == results["methods"]["notellm2"]["metrics"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.parquet").write_bytes((platform / "notes.parquet").read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--data", str(other), "--out", str(out), "--pairs", str(out / "pairs"), "--tiny"])
    assert exit_info.value.code == 2


def test_generated_platforms_keep_their_layout(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "emoji.json").write_text("{}")
    source = quality_data.quality_source(tmp_path)
    assert (source.label, source.data, source.images, source.pairs) == (
        "emoji",
        tmp_path / "data",
        tmp_path / "data",
        tmp_path / "pairs",
    )


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "not a directory"),
        ("empty", [], "no notes.parquet"),
        ("notes", [], "no logs/ to mine pairs from"),
        ("notes", ["--pairs", "{tmp}/nopairs"], "train.parquet, val.parquet, test.parquet missing"),
    ],
)
def test_bad_platform_directories_exit_2_with_one_line(
    tmp_path: Path, platform: Path, make: str | None, args: list[str], message: str
) -> None:
    data = tmp_path / "platform"
    if make is not None:
        data.mkdir()
    if make == "notes":
        (data / "notes.parquet").write_bytes((platform / "notes.parquet").read_bytes())
    (tmp_path / "nopairs").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "quality.py"),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "q"),
        ]
        + [a.format(tmp=tmp_path) for a in args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "q").exists()  # only a valid platform gets its OUT


def test_generator_flags_do_not_apply_to_a_platform_directory(platform: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        quality.parse_args(["--data", str(platform), "--users", "10"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        quality.parse_args(["--data", "emoji", "--pairs", str(tmp_path)])
    assert quality.parse_args(["--data", str(platform)]).window == "7d"
    assert quality.parse_args(["--data", "emoji"]).window == "1h"


def test_a_generated_platform_is_reused_only_for_the_same_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q"
    (out / "data").mkdir(parents=True)
    # Written by an emoji platform of the defaults (before --subgroup-share existed).
    (out / "data" / "emoji.json").write_text(json.dumps({"seed": 0, "users": 3000, "events": 300_000}))
    same = quality.parse_args(["--data", "emoji", "--out", str(out)])
    quality._check_generated(same, json.loads((out / "data" / "emoji.json").read_text()), out / "data")
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--data", "emoji", "--out", str(out), "--subgroup-share", "0.8", "--tiny"])
    assert exit_info.value.code == 2
    assert "subgroup_share 0.5 (asked: 0.8)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(quality.UserError, match=r"seed 0 \(asked: 1\)"):
        other_seed = quality.parse_args(["--data", "emoji", "--out", str(out), "--seed", "1"])
        quality._check_generated(other_seed, {"seed": 0, "users": 3000, "events": 300_000}, out / "data")


def test_the_late_fusion_recipe_is_the_short_budget_preset(tmp_path: Path) -> None:
    from train.presets import FUSION_PRETRAIN_STEPS

    out = ["--out", str(tmp_path / "q")]
    for mode in ("lora", "full"):
        args = quality.parse_args([*out, "--llm-train", mode])
        assert args.fusion_lr is None and args.fusion_pretrain_steps == FUSION_PRETRAIN_STEPS
        assert args.fusion_pretrain_at == "end" and args.fusion_calibrate
    args = quality.parse_args(
        [*out, "--fusion-lr", "3e-4", "--fusion-pretrain-steps", "0", "--no-fusion-calibrate"]
    )
    assert (args.fusion_lr, args.fusion_pretrain_steps, args.fusion_calibrate) == (3e-4, 0, False)
    with pytest.raises(SystemExit):
        quality.parse_args([*out, "--fusion-pretrain-steps", "-1"])
    with pytest.raises(SystemExit):
        quality.parse_args([*out, "--fusion-pretrain-at", "middle"])
