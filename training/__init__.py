"""Training: data wiring, and (with the trainer) the optimisation loop."""
