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
    with pytest.raises(ConfigError, match="preset must be one of paper, tiny, small, got 'huge'"):
        parse_config(FinetuneConfig, ["--preset", "huge"])


def test_precedence_defaults_preset_yaml_flags(tmp_path):
    f = write_yaml(tmp_path / "c.yaml", {"preset": "paper", "steps": 50, "lr": "1e-4", "model": {"dynamic": "none"}})
    cfg = parse_config(FinetuneConfig, ["--config", str(f)])
    assert cfg.preset == "paper" and cfg.steps == 50 and cfg.lr == 1e-4
    assert cfg.model == replace(PRESETS["paper"], dynamic="none")  # the preset, then the YAML's model keys
    cfg = parse_config(FinetuneConfig, ["--config", str(f), "--steps", "7", "--model.width", "64"])
    assert cfg.steps == 7 and cfg.model.width == 64 and cfg.model.dynamic == "none"
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
    with pytest.raises(ConfigError, match="degradation must be one of adversarial, weather, got 'fog'"):
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


def test_integers_are_whole_numbers_never_truncated(tmp_path):
    assert parse_config(FinetuneConfig, ["--steps", "1e3"]).steps == 1000
    assert parse_config(FinetuneConfig, ["--steps", "12"]).steps == 12
    f = write_yaml(tmp_path / "c.yaml", {"steps": 2.0})
    assert parse_config(FinetuneConfig, ["--config", str(f)]).steps == 2
    for bad in ("1.5", "1.5e0", "2.5e-1", "inf", "nan", "true"):
        with pytest.raises(ConfigError, match=rf"cannot read '{bad}' as int \((not a whole number|not a number)\)"):
            parse_config(FinetuneConfig, ["--steps", bad])
    with pytest.raises(ConfigError, match="cannot read 1.5 as int"):
        parse_config(FinetuneConfig, ["--config", str(write_yaml(tmp_path / "d.yaml", {"steps": 1.5}))])


def test_tuples_take_their_declared_element_types_and_lengths():
    assert parse_config(FinetuneConfig, ["--betas", "0.8,0.9"]).betas == (0.8, 0.9)
    with pytest.raises(ConfigError, match=r"'betas' .*needs 2 values, got 3"):
        parse_config(FinetuneConfig, ["--betas", "0.8,0.9,0.99"])
    with pytest.raises(ConfigError, match=r"'model.enc_blocks' .*cannot read '1.5,1,1'"):
        parse_config(FinetuneConfig, ["--model.enc-blocks", "1.5,1,1"])


def test_a_field_type_the_parser_does_not_know_is_a_bug_not_passed_through():
    from dataclasses import dataclass

    from dwgn.training.config import set_value

    @dataclass
    class Odd:
        ratio: complex = 1j
        items: list = None

    with pytest.raises(TypeError, match="config field ratio has type .*complex.* cannot convert"):
        set_value(Odd(), "ratio", "2j")
    with pytest.raises(TypeError, match="config field items"):
        set_value(Odd(), "items", "a,b")


def test_stored_configs_missing_fields_are_refused_not_filled_with_defaults(tmp_path):
    from dwgn.training.checkpoint import CheckpointError
    from dwgn.training.config import model_config_from_dict

    data = config_to_dict(FinetuneConfig())
    del data["lr"], data["model"]["window"]
    with pytest.raises(ConfigError, match=r"lacks model.window, lr .*nothing is filled in with defaults"):
        config_from_dict(FinetuneConfig, data)
    with pytest.raises(ConfigError, match="lacks window"):
        model_config_from_dict(data["model"])
    model = build_model("tiny")
    save_checkpoint(tmp_path / "m.pt", {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                                        "model_ema": None, "config": data, "step": 1})
    with pytest.raises(CheckpointError, match=r"m.pt.*lacks window"):
        load_model(tmp_path / "m.pt")


def test_help_describes_every_key_and_its_allowed_values(capsys):
    from dwgn.training.config import _flatten
    from dwgn.training.pretraining import PretrainingConfig

    for cls in (FinetuneConfig, PretrainingConfig):
        with pytest.raises(SystemExit) as done:
            parse_config(cls, ["--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  --")}
        for key, _ in _flatten(config_to_dict(cls())):
            row = rows[f"--{key.replace('_', '-')}"]
            assert len(row.split()) >= 4, f"no description for {key}: {row!r}"  # key, default, >= 2 words
    assert "{bf16, fp16, none}" in rows["--amp"] and "{half, none, full}" in rows["--model.dynamic"]
    assert "{adversarial, weather}" in rows["--degradation"] and "{paper, tiny, small}" in rows["--preset"]
    assert "0.9,0.999" in rows["--betas"] and "two numbers" in rows["--betas"]


def test_the_preset_is_checked_in_one_place(monkeypatch):
    import dwgn.training.config as config

    calls = []
    original = config._check_choices
    monkeypatch.setattr(config, "_check_choices", lambda cfg, prefix="": (calls.append(prefix), original(cfg, prefix)))
    with pytest.raises(ConfigError, match="preset must be one of paper, tiny, small, got 'huge'"):
        parse_config(FinetuneConfig, ["--preset", "huge"])
    assert calls == [""]  # validate() once; parse_config itself does not check the preset


# ---------------------------------------------------------------- the synth group (synthetic weather, not the paper's)


def test_synth_keys_are_one_group_in_flags_yaml_and_help(tmp_path, capsys):
    from dwgn.training.config import SynthConfig

    cfg = parse_config(FinetuneConfig, ["--synth.online", "--synth.tone-share", "0.5", "--synth.weather_weights",
                                        "2,1,2,1,1", "--steps", "3"])
    assert cfg.synth == SynthConfig(online=True, tone_share=0.5, weather_weights=(2.0, 1.0, 2.0, 1.0, 1.0))
    assert cfg.steps == 3 and parse_config(FinetuneConfig, ["--synth.online"]).synth.online is True
    f = write_yaml(tmp_path / "s.yaml", {"steps": 4, "synth": {"online": True, "clean_share": 0.3, "clean_crop": 96}})
    cfg = parse_config(FinetuneConfig, ["--config", str(f), "--synth.clean-share", "0.4"])
    assert cfg.synth == SynthConfig(online=True, clean_share=0.4, clean_crop=96)
    assert config_to_dict(cfg)["synth"]["clean_crop"] == 96 and "clean_share" not in config_to_dict(cfg)
    with pytest.raises(SystemExit):
        parse_config(FinetuneConfig, ["--help"])
    out = capsys.readouterr().out
    keys = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    synth = [k for k in keys if k.startswith("--synth.")]
    assert synth == ["--synth.online", "--synth.clean-share", "--synth.tone-share", "--synth.pair-tone-share",
                     "--synth.weather-side", "--synth.clean-crop", "--synth.weather-weights"]
    assert not {"--online-weather", "--online", "--clean-share", "--tone-share", "--weather-weights"} & set(keys)
    assert any(line.startswith("  synth.*: ") and "not in the paper" in line for line in out.splitlines())


def test_synth_mistakes_name_the_flag_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"--online-weather.*synth.online.*--synth.online"):
        parse_config(FinetuneConfig, ["--online-weather"])
    with pytest.raises(ConfigError, match=r"--clean-share.*--synth.clean-share"):
        parse_config(FinetuneConfig, ["--clean-share", "0.3", "--steps", "2"])
    old_yaml = write_yaml(tmp_path / "old.yaml", {"tone_share": 0.5})
    with pytest.raises(ConfigError, match=rf"'tone_share' \(from {old_yaml}\).*synth.tone_share.*tone_share under"):
        parse_config(FinetuneConfig, ["--config", str(old_yaml)])
    with pytest.raises(ConfigError, match=r"synth.tone_share, synth.clean_crop set, but synth.online is off.*"
                                          r"--synth.online"):
        parse_config(FinetuneConfig, ["--synth.tone-share", "0.5", "--synth.clean-crop", "96"])
    with pytest.raises(ConfigError, match=r"synth.clean_share must be in \[0, 1\), got 1.0 \(e.g. --synth.clean-sh"):
        parse_config(FinetuneConfig, ["--synth.online", "--synth.clean-share", "1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'synth.tone'.*valid keys: synth.online, synth.clean"):
        parse_config(FinetuneConfig, ["--synth.tone", "0.5"])
    with pytest.raises(ConfigError, match="unknown config key 'synth'"):  # pre-training has no synthetic weather group
        parse_config(PretrainConfig, ["--synth.online", "true"])


def test_the_papers_configs_name_no_synth_key_and_the_demos_use_the_group():
    from dwgn.training.config import MOVED_KEYS, _yaml_ready

    for name in ("finetune_paper.yaml", "pretrain_paper.yaml"):
        data = yaml.safe_load((CONFIGS / name).read_text())
        assert "synth" not in data and not set(MOVED_KEYS) & set(data) and "self_feed_share" not in data, name
    demo = yaml.safe_load((CONFIGS / "finetune_demo.yaml").read_text())
    assert set(demo["synth"]) == set(config_to_dict(FinetuneConfig())["synth"]) and not set(MOVED_KEYS) & set(demo)
    shipped = CONFIGS.parent / "checkpoints" / "dwgn-small-demo.yaml"
    cfg = parse_config(FinetuneConfig, ["--config", str(shipped)])
    assert cfg.synth.online and cfg.out == "runs/demo-small"
    assert yaml.safe_load(shipped.read_text()) == yaml.safe_load(yaml.safe_dump(_yaml_ready(config_to_dict(cfg))))


def flat_synth(stored: dict, self_feed_share: float = 0.0) -> dict:
    """A stored config as written before the synth group: its keys at the top level (online as online_weather),
    and the since removed self_feed_share."""
    old = {k: v for k, v in stored.items() if k != "synth"}
    old.update({("online_weather" if k == "online" else k): v for k, v in stored["synth"].items()})
    return {**old, "self_feed_share": self_feed_share}


def test_stored_configs_with_the_old_flat_keys_are_read_into_the_synth_group(tmp_path):
    from dwgn.training.checkpoint import load_weights
    from dwgn.training.config import SynthConfig, upgrade_stored_config

    cfg = FinetuneConfig(synth=SynthConfig(online=True, clean_share=0.35, tone_share=0.5, weather_side=96,
                                           weather_weights=(2.0, 1.0, 1.5, 1.5, 1.5)))
    old = flat_synth(config_to_dict(cfg))
    assert "synth" not in old and old["online_weather"] is True and old["clean_share"] == 0.35
    assert upgrade_stored_config(old) == config_to_dict(cfg)
    assert config_from_dict(FinetuneConfig, old) == cfg
    # a run that used the removed option is not read as one that did not
    assert upgrade_stored_config(flat_synth(config_to_dict(cfg), 0.5))["self_feed_share"] == 0.5
    with pytest.raises(ConfigError, match="unknown config key 'self_feed_share'"):
        config_from_dict(FinetuneConfig, flat_synth(config_to_dict(cfg), 0.5))
    # such a checkpoint restores and initialises a network: only config["model"] rebuilds it
    torch.manual_seed(0)
    model = build_model("tiny")
    save_checkpoint(tmp_path / "old.pt", {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                                          "model_ema": None, "config": old, "step": 3})
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "old.pt")(x), model.eval()(x))
    assert load_weights(build_model("tiny"), tmp_path / "old.pt")["step"] == 3


def test_the_shipped_release_stores_the_training_config_of_its_yaml():
    """checkpoints/dwgn-small-demo.safetensors embeds the config it was trained with (flat synthetic-weather keys,
    as written then); read into today's shape it is checkpoints/dwgn-small-demo.yaml but for the run folder."""
    root = CONFIGS.parent / "checkpoints"
    stored = config_from_dict(FinetuneConfig, load_checkpoint(root / "dwgn-small-demo.safetensors")["config"])
    shipped = parse_config(FinetuneConfig, ["--config", str(root / "dwgn-small-demo.yaml")])
    assert replace(stored, out=shipped.out) == shipped
