"""Training: the generic loop (loop.py), CAGE's trainer (trainer.py), our VQVAE's (autoencoder_trainer.py) and their
parts. DEFAULT_SEED lives here, light to import, for train.py's command line and the loop's default."""

DEFAULT_SEED = 1543  # the original's default --random-seed
