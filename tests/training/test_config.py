"""Typed config: precedence, conversion, unknown keys, §6 flags, YAML -> checkpoint -> model round trip."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from dwgn.training.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from dwgn.training.config import ConfigError, FinetuneConfig, TrainConfig
from dwgn.training.cli import config_from_dict, config_to_dict, parse_config, save_yaml
from dwgn.training.pretraining import PretrainingConfig
from dwgn.models.network import PRESETS, build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def refused(cls, argv: list[str], *named: str) -> str:
    """parse_config refuses `argv` with one ConfigError on one line naming each of `named` (a key, a value, a
    file, the fix); returns the message."""
    with pytest.raises(ConfigError) as err:
        parse_config(cls, argv)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in named), message
    return message


def test_defaults_are_the_tiny_demo():
    cfg = parse_config(FinetuneConfig, [])
    assert cfg.preset == "tiny" and cfg.model == PRESETS["tiny"]
    assert cfg == FinetuneConfig()


def test_unknown_keys_name_the_key_and_the_valid_ones(tmp_path):
    message = refused(FinetuneConfig, ["--batchsize", "8"], "'batchsize'", "batch_size", "see --help")
    assert "model.width" not in message  # the valid keys of the level the unknown key is on
    message = refused(FinetuneConfig, ["--model.depth", "3"], "'model.depth'", "model.width", "model.enc_blocks")
    assert "batch_size" not in message
    bad = write_yaml(tmp_path / "bad.yaml", {"steps": 5, "model": {"widht": 8}})
    refused(FinetuneConfig, ["--config", str(bad)], "'model.widht'", str(bad), "model.width")
    refused(FinetuneConfig, ["--config", str(write_yaml(tmp_path / "top.yaml", {"stepz": 5}))], "'stepz'", "steps")
    refused(FinetuneConfig, ["--config", str(write_yaml(tmp_path / "m.yaml", {"model": 3}))], "'model'", "3")
    refused(PretrainingConfig, ["--init", "x.pt"], "'init'", "degradation")  # a fine-tuning key is no pre-training key


def test_values_are_converted_to_the_field_types(assert_mentions):
    cfg = parse_config(FinetuneConfig, ["--model.enc-blocks", "1,2,3", "--betas", "0.8,0.95", "--lr=3e-4",
                                        "--steps", "12", "--from-scratch", "--val-crop", "none", "--data", "x/y"])
    assert cfg.model.enc_blocks == (1, 2, 3) and cfg.betas == (0.8, 0.95)
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float) and cfg.steps == 12
    assert cfg.from_scratch is True and cfg.val_crop is None and cfg.data == "x/y"
    assert parse_config(FinetuneConfig, ["--from-scratch", "false"]).from_scratch is False
    assert parse_config(FinetuneConfig, ["--from-scratch", "--steps", "5"]).from_scratch is True
    # hyphens or underscores; `none` clears an optional key, but is a value like any other for a string key
    assert parse_config(FinetuneConfig, ["--batch-size", "3"]) == parse_config(FinetuneConfig, ["--batch_size", "3"])
    cfg = parse_config(FinetuneConfig, ["--val-data", "none", "--model.dynamic", "none", "--synth.online",
                                        "--synth.weather-side=none", "--out", "null"])
    assert cfg.val_data is None and cfg.model.dynamic == "none" and cfg.synth.weather_side is None and cfg.out is None
    assert parse_config(FinetuneConfig, ["--betas", "[0.8, 0.95]", "--lr", "1"]).betas == (0.8, 0.95)
    assert parse_config(FinetuneConfig, ["--lr", "1"]).lr == 1.0
    refused(FinetuneConfig, ["--steps", "ten"], "steps", "ten")
    refused(FinetuneConfig, ["--batch-size"], "batch_size", "see --help")
    refused(FinetuneConfig, ["extra"], "extra", "--key value")
    with pytest.raises(ConfigError) as info:  # validate(): the value checks
        parse_config(FinetuneConfig, ["--batch-size", "0"])
    assert_mentions(str(info.value), "batch_size", "0")
    with pytest.raises(ConfigError) as info:
        parse_config(FinetuneConfig, ["--preset", "huge"])
    assert_mentions(str(info.value), "preset", "paper, tiny, small", "'huge'")


def test_precedence_defaults_preset_yaml_flags(tmp_path):
    f = write_yaml(tmp_path / "c.yaml", {"preset": "paper", "steps": 50, "lr": "1e-4", "model": {"dynamic": "none"}})
    cfg = parse_config(FinetuneConfig, ["--config", str(f)])
    assert cfg.preset == "paper" and cfg.steps == 50 and cfg.lr == 1e-4
    assert cfg.model == replace(PRESETS["paper"], dynamic="none")  # the preset, then the YAML's model keys
    cfg = parse_config(FinetuneConfig, ["--config", str(f), "--steps", "7", "--model.width", "64"])
    assert cfg.steps == 7 and cfg.model.width == 64 and cfg.model.dynamic == "none"
    assert parse_config(FinetuneConfig, ["--steps", "7", "--config", str(f)]).steps == 7  # flags win wherever
    cfg = parse_config(FinetuneConfig, ["--preset", "paper", "--model.head-dim", "16"])
    assert cfg.model == replace(PRESETS["paper"], head_dim=16)
    cfg = parse_config(FinetuneConfig, ["--config", str(f), "--preset", "small"])  # a flag's preset over the YAML's
    assert cfg.preset == "small" and cfg.model == replace(PRESETS["small"], dynamic="none")
    refused(FinetuneConfig, ["--config", str(tmp_path / "missing.yaml")], "missing.yaml", "configs/")
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1\n")
    refused(FinetuneConfig, ["--config", str(broken)], str(broken))
    refused(FinetuneConfig, ["--config", str(write_yaml(tmp_path / "list.yaml", [1, 2]))], "list.yaml", "mapping")


def test_every_flag_of_design_section_6_is_accepted(tmp_path, assert_mentions):
    common = ["--config", str(CONFIGS / "finetune_demo.yaml"), "--preset", "tiny", "--steps", "3",
              "--batch-size", "2", "--data", "d", "--out", "o", "--device", "cpu", "--seed", "1",
              "--num-workers", "0"]
    ft = parse_config(FinetuneConfig, common + ["--init", "p.pt"])
    assert (ft.steps, ft.batch_size, ft.data, ft.out, ft.device, ft.seed, ft.num_workers, ft.init) == \
        (3, 2, "d", "o", "cpu", 1, 0, "p.pt")
    assert parse_config(FinetuneConfig, ["--from-scratch"]).from_scratch
    common[1] = str(CONFIGS / "pretrain_demo.yaml")
    pt = parse_config(PretrainingConfig, common + ["--degradation", "weather"])
    assert pt.degradation == "weather" and pt.steps == 3
    with pytest.raises(ConfigError) as info:
        parse_config(PretrainingConfig, ["--degradation", "fog"])
    assert_mentions(str(info.value), "degradation", "adversarial, weather", "'fog'")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_parse(name):
    cls = FinetuneConfig if name.startswith("finetune") else PretrainingConfig
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
    assert issubclass(FinetuneConfig, TrainConfig) and issubclass(PretrainingConfig, TrainConfig)
    assert set(config_to_dict(TrainConfig())) < set(config_to_dict(FinetuneConfig()))


def test_integers_are_whole_numbers_never_truncated(tmp_path):
    assert parse_config(FinetuneConfig, ["--steps", "12"]).steps == 12
    for bad in ("1.5", "1.5e0", "2.5e-1", "1e3", "inf", "nan", "true", "12px"):  # 1e3 and 2.0 are floats
        refused(FinetuneConfig, ["--steps", bad], "'steps'", "int")
    for bad in (1.5, 2.0, True, "twelve"):
        f = write_yaml(tmp_path / "d.yaml", {"steps": bad})
        refused(FinetuneConfig, ["--config", str(f)], "'steps'", str(f), str(bad))


def test_tuples_take_their_declared_element_types_and_lengths():
    assert parse_config(FinetuneConfig, ["--betas", "0.8,0.9"]).betas == (0.8, 0.9)
    refused(FinetuneConfig, ["--betas", "0.8,0.9,0.99"], "'betas'", "2 elements", "0.99")
    refused(FinetuneConfig, ["--model.enc-blocks", "1.5,1,1"], "'model.enc_blocks'", "1.5")
    refused(FinetuneConfig, ["--synth.online", "--synth.weather-weights", "a,1"], "'synth.weather_weights'", "a")


def test_stored_configs_missing_fields_are_refused_not_filled_with_defaults(tmp_path, assert_mentions):
    from dwgn.training.checkpoint import CheckpointError
    from dwgn.models.network import ModelConfig

    data = config_to_dict(FinetuneConfig())
    wrong = {**data, "steps": 1.5, "model": {**data["model"], "width": "wide"}}
    with pytest.raises(ConfigError) as info:  # stored values are type-checked too
        config_from_dict(FinetuneConfig, wrong, source="run.pt")
    assert_mentions(str(info.value), "'steps'", "run.pt", "1.5")
    with pytest.raises(ConfigError) as info:
        config_from_dict(ModelConfig, wrong["model"], source="run.pt")
    assert_mentions(str(info.value), "'width'", "run.pt", "wide")
    del data["lr"], data["model"]["window"]
    with pytest.raises(ConfigError) as info:
        config_from_dict(FinetuneConfig, data)
    assert_mentions(str(info.value), "model.window", "lr", "retrain")
    with pytest.raises(ConfigError) as info:
        config_from_dict(ModelConfig, data["model"])
    assert_mentions(str(info.value), "window", "retrain")
    model = build_model("tiny")
    save_checkpoint(tmp_path / "m.pt", {"format_version": FORMAT_VERSION, "model": model.state_dict(),
                                        "model_ema": None, "config": data, "step": 1})
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "m.pt")
    assert_mentions(str(info.value), str(tmp_path / "m.pt"), "window", "retrain")


def help_entries(cls, capsys) -> dict[str, str]:
    """`--help` of `cls`: each option (`--batch_size`) -> its entry, whitespace removed (the text is wrapped)."""
    with pytest.raises(SystemExit) as done:
        parse_config(cls, ["--help"])
    assert done.value.code == 0
    entries, key = {}, None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  --"):
            key = line.split()[0]
            entries[key] = ""
        elif not line.startswith("    "):
            key = None
        if key:
            entries[key] += "".join(line.split())
    return entries


def test_help_describes_every_key_and_its_allowed_values(capsys):
    from dataclasses import fields, is_dataclass

    for cls in (FinetuneConfig, PretrainingConfig):
        entries = help_entries(cls, capsys)
        defaults = cls()
        for group in [defaults] + [getattr(defaults, f.name) for f in fields(defaults)
                                   if is_dataclass(getattr(defaults, f.name))]:
            prefix = "" if group is defaults else next(f.name for f in fields(defaults)
                                                       if getattr(defaults, f.name) is group) + "."
            for f in fields(group):
                if is_dataclass(getattr(group, f.name)):
                    continue
                entry = entries[f"--{prefix}{f.name}"]
                assert "".join(f.metadata["help"].split()) in entry, (f.name, entry)  # the field's own text
                assert f"default:{''.join(str(getattr(group, f.name)).split())}" in entry.replace("null", "None")
    assert "{bf16,fp16,none}" in entries["--amp"] and "{half,none,full}" in entries["--model.dynamic"]
    assert "{adversarial,weather}" in entries["--degradation"] and "{paper,tiny,small}" in entries["--preset"]
    assert "0.9,0.999" in entries["--betas"] and "twonumbers" in entries["--betas"]


def test_the_preset_is_checked_in_one_place(monkeypatch, assert_mentions):
    import dwgn.training.config as config

    calls = []
    original = config._check_choices
    monkeypatch.setattr(config, "_check_choices", lambda cfg, prefix="": (calls.append(prefix), original(cfg, prefix)))
    with pytest.raises(ConfigError) as info:
        parse_config(FinetuneConfig, ["--preset", "huge"])
    assert_mentions(str(info.value), "preset", "paper, tiny, small", "'huge'")
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
    assert synth == ["--synth.online", "--synth.clean_share", "--synth.tone_share", "--synth.pair_tone_share",
                     "--synth.weather_side", "--synth.clean_crop", "--synth.weather_weights"]
    assert not {"--online_weather", "--online", "--clean_share", "--tone_share", "--weather_weights"} & set(keys)
    group = out[out.index("\nsynth:"):]  # the group's heading, then its description
    assert "not in the paper" in " ".join(group.split("  --synth")[0].split())


def test_synth_mistakes_name_the_flag_and_the_fix(tmp_path, assert_mentions):
    refused(FinetuneConfig, ["--online-weather"], "--online-weather", "--synth.online")
    refused(FinetuneConfig, ["--clean_share=0.3", "--steps", "2"], "--clean_share", "--synth.clean-share")
    old_yaml = write_yaml(tmp_path / "old.yaml", {"tone_share": 0.5})
    refused(FinetuneConfig, ["--config", str(old_yaml)], "'tone_share'", str(old_yaml), "tone_share under synth:")
    with pytest.raises(ConfigError) as info:
        parse_config(FinetuneConfig, ["--synth.tone-share", "0.5", "--synth.clean-crop", "96"])
    assert_mentions(str(info.value), "synth.tone_share", "synth.clean_crop", "--synth.online")
    with pytest.raises(ConfigError) as info:
        parse_config(FinetuneConfig, ["--synth.online", "--synth.clean-share", "1"])
    assert_mentions(str(info.value), "synth.clean_share", "1.0", "--synth.clean-share")
    refused(FinetuneConfig, ["--synth.tone", "0.5"], "'synth.tone'", "synth.online", "synth.tone_share")
    refused(PretrainingConfig, ["--synth.online", "true"], "'synth.online'", "degradation")  # no synth group there


def test_the_papers_configs_name_no_synth_key_and_the_demos_use_the_group():
    from dwgn.training.cli import MOVED_KEYS, _yaml_ready

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
    from dwgn.training.config import SynthConfig
    from dwgn.training.cli import upgrade_stored_config

    cfg = FinetuneConfig(synth=SynthConfig(online=True, clean_share=0.35, tone_share=0.5, weather_side=96,
                                           weather_weights=(2.0, 1.0, 1.5, 1.5, 1.5)))
    old = flat_synth(config_to_dict(cfg))
    assert "synth" not in old and old["online_weather"] is True and old["clean_share"] == 0.35
    assert upgrade_stored_config(old) == config_to_dict(cfg)
    assert config_from_dict(FinetuneConfig, old) == cfg
    # a run that used the removed option is not read as one that did not
    assert upgrade_stored_config(flat_synth(config_to_dict(cfg), 0.5))["self_feed_share"] == 0.5
    with pytest.raises(ConfigError, match="'self_feed_share'"):
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
