"""Training: configuration, objective, loop, checkpoints, several processes."""
