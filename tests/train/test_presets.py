"""Model presets live in one module; every shipped TOML config parses and builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserError
from i2i.demo import DemoConfig
from train.model import build_model
from train.model_config import ModelConfig
from train.presets import PRESETS, preset
from train.testing import single_thread, tiny_model_config
from train.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_TOML = sorted(
    p for p in ROOT.glob("**/*.toml") if p.name != "pyproject.toml" and ".venv" not in p.parts
)


def test_presets_are_valid_model_configs() -> None:
    for name in PRESETS:
        assert isinstance(preset(name), ModelConfig)
    assert preset("default") == ModelConfig()
    assert DemoConfig().model == preset("demo") and tiny_model_config() == preset("tiny")
    assert preset("tiny", variant="micl").variant == "micl"
    with pytest.raises(UserError, match="unknown model preset 'huge'; choose one of default, demo"):
        preset("huge")


def test_the_method_fuses_by_the_papers_equation_and_the_demo_adds_h_back() -> None:
    """The paper's late fusion is the default; the CPU-budget `demo` preset (what `i2i demo`
    and the quality benchmark train) keeps the LLM state with the residual."""
    assert not ModelConfig().fusion_residual and not preset("tiny").fusion_residual
    assert preset("demo").fusion_residual
    assert not preset("demo", fusion_residual=False).fusion_residual


def test_a_toml_model_table_names_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('lr = 0.01\n\n[model]\npreset = "tiny"\nvariant = "basic"\n')
    cfg = TrainConfig.load(path, model_overrides={"dim": 8})
    assert cfg.model == preset("tiny", variant="basic", dim=8)  # the preset, the table, then flags


@pytest.mark.parametrize("path", SHIPPED_TOML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_toml_parses_and_builds(path: Path) -> None:
    cfg = TrainConfig.load(path)
    model = cfg.model
    if model.llm_config is None:  # a pretrained LLM: build its first layer only (the same code path)
        model = ModelConfig.from_dict({**model.to_dict(), "llm_overrides": {"num_hidden_layers": 1}})
    with single_thread():
        built = build_model(model)
    assert built.config.variant == cfg.model.variant
    if path.name == "tiny.toml":
        assert cfg.model == preset("tiny")  # no drift from the tests' tiny model


def test_toml_files_are_found() -> None:
    assert {p.name for p in SHIPPED_TOML} >= {"example.toml", "tiny.toml", "demo.toml"}


def test_the_demo_recipe_file_is_what_the_demo_trains(tmp_path: Path) -> None:
    from i2i.demo import DemoPaths, demo_train_config

    shipped = TrainConfig.load(ROOT / "infra" / "launch" / "demo.toml").to_dict()
    demo = demo_train_config(DemoConfig(), DemoPaths(tmp_path)).to_dict()
    paths_and_device = ("notes", "images", "pairs", "out", "device")
    assert {k: v for k, v in shipped.items() if k not in paths_and_device} == {
        k: v for k, v in demo.items() if k not in paths_and_device
    }


def test_the_short_budget_aligns_w_v_after_the_joint_stage_and_calibrates(tmp_path: Path) -> None:
    from i2i.demo import DemoPaths, demo_train_config
    from train.presets import FUSION_PRETRAIN_STEPS

    paths = DemoPaths(tmp_path)
    for mode in ("lora", "full"):
        cfg = demo_train_config(DemoConfig(llm_train=mode), paths)
        assert cfg.fusion_lr is None  # the joint stage: every new module at `lr`, as the paper
        assert cfg.fusion_pretrain_steps == FUSION_PRETRAIN_STEPS > 0 and cfg.fusion_pretrain_at == "end"
        assert cfg.fusion_calibrate
    assert demo_train_config(DemoConfig(fusion_lr=3e-4), paths).fusion_lr == 3e-4
    assert TrainConfig().fusion_pretrain_steps == 0 and not TrainConfig().fusion_calibrate  # the paper
