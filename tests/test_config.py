"""Typed config: precedence, conversion, unknown keys, §6 flags, YAML -> checkpoint -> model round trip."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from dwgn.training.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from dwgn.training.config import (ConfigError, FinetuneConfig, PretrainConfig, TrainConfig, config_from_dict,
                         config_to_dict, parse_config, save_yaml)
from dwgn.models.network import PRESETS, build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_tiny_demo():
    cfg = parse_config(FinetuneConfig, [])
    assert cfg.preset == "tiny" and cfg.model == PRESETS["tiny"]
    assert cfg == FinetuneConfig()


def test_unknown_keys_name_the_key_and_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'batchsize' \(from --batchsize\); valid keys: .*batch_size"):
        parse_config(FinetuneConfig, ["--batchsize", "8"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model.depth'.*valid keys: model.width, model.enc_blocks"):
        parse_config(FinetuneConfig, ["--model.depth", "3"])
    bad = write_yaml(tmp_path / "bad.yaml", {"steps": 5, "model": {"widht": 8}})
    with pytest.raises(ConfigError, match=rf"unknown config key 'model.widht' \(from {bad}\)"):
        parse_config(FinetuneConfig, ["--config", str(bad)])
    with pytest.raises(ConfigError, match="unknown config key 'init'"):  # a fine-tuning key is no pre-training key
        parse_config(PretrainConfig, ["--init", "x.pt"])


def test_values_are_converted_to_the_field_types():
    cfg = parse_config(FinetuneConfig, ["--model.enc-blocks", "1,2,3", "--betas", "0.8,0.95", "--lr=3e-4",
                                        "--steps", "12", "--from-scratch", "--val-crop", "none", "--data", "x/y"])
    assert cfg.model.enc_blocks == (1, 2, 3) and cfg.betas == (0.8, 0.95)
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float) and cfg.steps == 12
    assert cfg.from_scratch is True and cfg.val_crop is None and cfg.data == "x/y"
    assert parse_config(FinetuneConfig, ["--from-scratch", "false"]).from_scratch is False
    with pytest.raises(ConfigError, match=r"config key 'steps' \(from --steps\): cannot read 'ten' as int"):
        parse_config(FinetuneConfig, ["--steps", "ten"])
    with pytest.raises(ConfigError, match="option --batch-size needs a value"):
        parse_config(FinetuneConfig, ["--batch-size"])
    with pytest.raises(ConfigError, match="unexpected argument 'extra'"):
        parse_config(FinetuneConfig, ["extra"])
    with pytest.raises(ConfigError, match="batch_size must be positive, got 0"):
        parse_config(FinetuneConfig, ["--batch-size", "0"])
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of paper, tiny"):
        parse_config(FinetuneConfig, ["--preset", "huge"])


def test_precedence_defaults_preset_yaml_flags(tmp_path):
    f = write_yaml(tmp_path / "c.yaml", {"preset": "paper", "steps": 50, "lr": "1e-4", "model": {"dynamic": "none"}})
    cfg = parse_config(FinetuneConfig, ["--config", str(f)])
    assert cfg.preset == "paper" and cfg.steps == 50 and cfg.lr == 1e-4
    assert cfg.model == replace(PRESETS["paper"], dynamic="none")  # the preset, then the YAML's model keys
    cfg = parse_config(FinetuneConfig, ["--config", str(f), "--steps", "7", "--model.width", "16"])
    assert cfg.steps == 7 and cfg.model.width == 16 and cfg.model.dynamic == "none"
    cfg = parse_config(FinetuneConfig, ["--preset", "paper", "--model.head-dim", "16"])
    assert cfg.model == replace(PRESETS["paper"], head_dim=16)
    with pytest.raises(ConfigError, match="config file .*missing.yaml not found"):
        parse_config(FinetuneConfig, ["--config", str(tmp_path / "missing.yaml")])


def test_every_flag_of_design_section_6_is_accepted(tmp_path):
    common = ["--config", str(CONFIGS / "finetune_demo.yaml"), "--preset", "tiny", "--steps", "3",
              "--batch-size", "2", "--data", "d", "--out", "o", "--device", "cpu", "--seed", "1",
              "--num-workers", "0"]
    ft = parse_config(FinetuneConfig, common + ["--init", "p.pt"])
    assert (ft.steps, ft.batch_size, ft.data, ft.out, ft.device, ft.seed, ft.num_workers, ft.init) == \
        (3, 2, "d", "o", "cpu", 1, 0, "p.pt")
    assert parse_config(FinetuneConfig, ["--from-scratch"]).from_scratch
    common[1] = str(CONFIGS / "pretrain_demo.yaml")
    pt = parse_config(PretrainConfig, common + ["--degradation", "weather"])
    assert pt.degradation == "weather" and pt.steps == 3
    with pytest.raises(ConfigError, match="degradation must be adversarial or weather"):
        parse_config(PretrainConfig, ["--degradation", "fog"])


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_parse(name):
    cls = FinetuneConfig if name.startswith("finetune") else PretrainConfig
    if cls is PretrainConfig:
        try:  # the pre-training stage adds its own keys (generator_lr, ...) in a subclass
            from dwgn.training.pretraining import PretrainingConfig as cls  # noqa: N813
        except ImportError:
            pass
    cfg = parse_config(cls, ["--config", str(CONFIGS / name)])
    assert cfg.preset == ("paper" if "paper" in name else "tiny")


def test_config_round_trip_yaml_checkpoint_model(tmp_path):
    cfg = parse_config(FinetuneConfig, ["--model.dynamic", "none", "--model.middle-blocks", "2", "--steps", "9"])
    save_yaml(cfg, tmp_path / "config.yaml")
    again = parse_config(FinetuneConfig, ["--config", str(tmp_path / "config.yaml")])
    assert again == cfg
    torch.manual_seed(0)
    model = build_model("tiny", dynamic="none", middle_blocks=2)
    save_checkpoint(tmp_path / "m.pt", {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                                        "model_ema": None, "config": config_to_dict(cfg), "step": 9})
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert config_from_dict(FinetuneConfig, ckpt["config"]) == cfg
    rebuilt = load_model(tmp_path / "m.pt")
    assert rebuilt.config == cfg.model and not rebuilt.training
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))


def test_train_config_is_the_shared_base():
    assert issubclass(FinetuneConfig, TrainConfig) and issubclass(PretrainConfig, TrainConfig)
    assert set(config_to_dict(TrainConfig())) < set(config_to_dict(FinetuneConfig()))
