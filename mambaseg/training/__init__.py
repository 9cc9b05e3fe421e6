"""Training: patch sampling, augmentation, losses, the trainer loop, checkpoints, distributed setup, logs and plots."""
