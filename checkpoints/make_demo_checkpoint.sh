#!/usr/bin/env bash
# The exact commands that made checkpoints/dwgn-tiny-demo.pt (the `tiny` network on the embedded,
# SYNTHETIC all-weather demo set -- not the paper's model, not trained on real data).
# Run from the repository root: bash checkpoints/make_demo_checkpoint.sh   (CPU, about an hour on 2 cores)
set -euo pipefail
python pre-training.py --config configs/pretrain_demo.yaml --steps 200 --out runs/demo-pretrain
python train.py --config configs/finetune_demo.yaml --init runs/demo-pretrain/last.pt \
    --steps 800 --batch-size 8 --crop 64 --val-every 100 --save-every 100 --out runs/demo-finetune
python -m dwgn.export runs/demo-finetune/best.pt checkpoints/dwgn-tiny-demo.pt \
    --note "tiny preset; pre-trained 200 steps (adversarial, packaged photos), fine-tuned 800 steps on the synthetic demo set"
cp runs/demo-finetune/config.yaml checkpoints/dwgn-tiny-demo.yaml
