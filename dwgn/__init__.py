"""DwGN: all-in-one adverse weather removal with dynamically generated weights.

Public API (docs/DESIGN.md §6): `build_model(preset, **overrides)`,
`load_model(checkpoint_path)`, `restore(model, image)`.

    dwgn/models      the paper's network: dynamic-weights convs, HDMC, HDFN, the encoder-decoder
    dwgn/data        synthetic weather, benchmark layouts, datasets, the embedded demo set
    dwgn/training    config, the step engine, checkpoints, Stage 1 (pre-training) and Stage 2 (fine-tuning)
    dwgn/evaluation  metrics, restoration of any size, test-set evaluation
    dwgn/analysis    do the generated weights separate the weathers?
"""
from dwgn.evaluation.restore import restore
from dwgn.models.network import PRESETS, DwGN, ModelConfig, build_model
from dwgn.training.checkpoint import load_model

__all__ = ["DwGN", "ModelConfig", "PRESETS", "build_model", "load_model", "restore"]
