#!/usr/bin/env bash
# The exact commands that made checkpoints/dwgn-tiny-demo.pt (the `tiny` network on the embedded,
# SYNTHETIC all-weather demo set -- not the paper's model, not trained on real data).
# Run from the repository root: bash checkpoints/make_demo_checkpoint.sh   (CPU, about 30 minutes on a shared 2-core machine)
# Honest record: for the shipped file, Stage 1 was first started with --steps 200 and cut at its
# step-100 checkpoint to save time (so it followed the 200-step cosine schedule); the line below gives
# an equally small, slightly different pre-training. best.pt was the step-200 checkpoint (validation
# PSNR 20.86 dB on 5 centre crops, inputs about 20 dB).
set -euo pipefail
python pre-training.py --config configs/pretrain_demo.yaml --steps 100 --out runs/demo-pretrain
python train.py --config configs/finetune_demo.yaml --init runs/demo-pretrain/last.pt \
    --steps 400 --batch-size 4 --crop 64 --val-every 100 --save-every 100 --out runs/demo-finetune
python -m dwgn.export runs/demo-finetune/best.pt checkpoints/dwgn-tiny-demo.pt \
    --note "tiny preset; pre-trained 100 steps (adversarial, packaged photos), fine-tuned 400 steps on the synthetic demo set"
cp runs/demo-finetune/config.yaml checkpoints/dwgn-tiny-demo.yaml
