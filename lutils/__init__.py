"""Utilities shared by training, data preparation and the demos."""
