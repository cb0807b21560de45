"""Training: typed config, the step engine shared by both stages, checkpoints, Stage 1 and Stage 2."""
