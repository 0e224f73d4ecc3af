"""Evaluation of trained CAGE models."""
