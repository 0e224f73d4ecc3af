"""Train our own VQVAE (autoencoder type "ours"): `python train_autoencoder.py --config configs/X_autoencoder.yaml
--run-name R [--wandb] [--num-gpus N] [--resume-step S|-1] [key=value ...]`.

Same run directory, resume, logging and torchrun conventions as train.py. The checkpoints (runs/<name>_run-<R>/
checkpoints/*.pth) are directly usable as `model.autoencoder.ckpt_path` of a CAGE config.
"""
import sys

from train import main

if __name__ == "__main__":
    sys.exit(main(kind="autoencoder"))
